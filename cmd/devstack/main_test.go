package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ryw-go/ryw/internal/devissuer"
	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the devstack command.
	if os.Getenv("RYW_TEST_RUN_DEVSTACK") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.replicas != 2 || o.replicaDelay != 2*time.Second || o.addr != "127.0.0.1:8080" || o.instances != 1 || o.state != "" {
		t.Errorf("defaults = %+v", o)
	}
	if tp := o.topology; tp.Pooler != "" || tp.Redis != devstack.RedisSingle || tp.RedisReplicas != 0 || tp.LeastPrivilege {
		t.Errorf("topology defaults = %+v; want no pooler, a single Redis, no least privilege", o)
	}
	for _, args := range [][]string{
		{"-replicas", "-1"}, {"-replica-delay", "-1s"}, {"-mode", "fast"}, {"-auth", "oauth"}, {"-sync-standbys", "3"}, {"-sync-standbys", "-1"}, {"-instances", "0"}, {"extra"}, {"-bogus"},
		{"-pooler", "statement"}, {"-pooler", ""}, {"-redis", "replicated"}, {"-redis", "cluster", "-redis-replicas", "2"},
		{"-redis", "cluster", "-redis-replicas", "-1"}, {"-redis-replicas", "1"}, {"-redis", "sentinel", "-redis-replicas", "0"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
	for _, tc := range []struct {
		args []string
		want func(options) bool
	}{
		{[]string{"-pooler", "none"}, func(o options) bool { return o.topology.Pooler == "" }},
		{[]string{"-pooler", "transaction"}, func(o options) bool { return o.topology.Pooler == devstack.PoolTransaction }},
		{[]string{"-pooler", "session"}, func(o options) bool { return o.topology.Pooler == devstack.PoolSession }},
		{[]string{"-redis", "sentinel"}, func(o options) bool {
			return o.topology.Redis == devstack.RedisSentinel && o.topology.RedisReplicas == 0
		}},
		{[]string{"-redis", "cluster"}, func(o options) bool {
			return o.topology.Redis == devstack.RedisCluster && o.topology.RedisReplicas == 1
		}},
		{[]string{"-redis", "cluster", "-redis-replicas", "0"}, func(o options) bool { return o.topology.RedisReplicas == 0 }},
		{[]string{"-least-privilege"}, func(o options) bool { return o.topology.LeastPrivilege }},
	} {
		o, err := parseFlags(tc.args, io.Discard)
		if err != nil || !tc.want(o) {
			t.Errorf("parseFlags(%q) = %+v, %v", tc.args, o, err)
		}
	}
}

func TestCallersIssuer(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	if given, err := callersIssuer(env()); given || err != nil {
		t.Errorf("none set: %v, %v; want devstack's own issuer", given, err)
	}
	if given, err := callersIssuer(env("AUTH_JWKS_URL", "https://idp/jwks", "AUTH_ISSUER", "https://idp/", "AUTH_AUDIENCE", "api")); !given || err != nil {
		t.Errorf("all set: %v, %v; want the caller's issuer", given, err)
	}
	_, err := callersIssuer(env("AUTH_ISSUER", "https://idp/"))
	if err == nil || !strings.Contains(err.Error(), "AUTH_JWKS_URL, AUTH_AUDIENCE missing") || !strings.Contains(err.Error(), "AUTH_ISSUER set") {
		t.Errorf("some set: %v; want an error naming what is set and what is missing", err)
	}
}

// TestOneCommandStack runs the command as a user would: it must bring up the
// primary, streaming replicas (the last one delayed), Redis and the API,
// print the URLs and "ready", and on SIGINT stop everything it started.
func TestOneCommandStack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole stack")
	}
	state := filepath.Join(t.TempDir(), "state.json")
	const delay = 700 * time.Millisecond
	ds := startDevstack(t,
		"-replicas", "2", "-replica-delay", delay.String(), "-instances", "2", "-addr", "127.0.0.1:0", "-state", state)
	printed, stderr, cmd := ds.printed, ds.stderr, ds.cmd
	ctx := t.Context()

	for _, k := range []string{"primary", "replica1", "replica2", "redis", "api1", "api2", "swagger", "logs", "state"} {
		if printed[k] == "" {
			t.Errorf("devstack did not print %s; printed %v", k, printed)
		}
	}

	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st devstack.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	if st.Primary != printed["primary"] || len(st.Replicas) != 2 || st.Replicas[1].Name != "replica2" ||
		st.Redis != printed["redis"] || len(st.API) != 2 || st.API[1] != printed["api2"] {
		t.Errorf("state file %+v does not match what was printed %v", st, printed)
	}
	ports := []string{hostPort(t, st.Primary), hostPort(t, st.Redis)}
	for _, r := range st.Replicas {
		ports = append(ports, hostPort(t, r.URL))
	}
	for _, a := range st.API {
		ports = append(ports, hostPort(t, a))
		resp, err := http.Get(a + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"ready"`) {
			t.Errorf("%s/readyz = %d %s", a, resp.StatusCode, body)
		}
	}

	// Two replicas stream from the primary.
	primary := connect(t, st.Primary)
	var streaming int
	if err := primary.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").Scan(&streaming); err != nil {
		t.Fatal(err)
	}
	if streaming != 2 {
		t.Errorf("pg_stat_replication shows %d streaming replicas, want 2", streaming)
	}

	// A write reaches replica1 at once and the delayed replica2 only after
	// its delay.
	if _, err := primary.Exec(ctx, "CREATE TABLE probe (id int)"); err != nil {
		t.Fatal(err)
	}
	var before time.Time
	if err := primary.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(ctx, "INSERT INTO probe VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var lsnText string
	if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsnText); err != nil {
		t.Fatal(err)
	}
	lsn, err := ryw.ParseLSN(lsnText)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Replicas {
		at := waitReplayed(t, connect(t, r.URL), lsn)
		if r.Name == "replica2" && at.Sub(before) < delay {
			t.Errorf("delayed replica2 applied the write %s after it was made, want at least %s", at.Sub(before), delay)
		}
	}

	// Ctrl-C stops everything and removes every file.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ds.exited:
		err := ds.err
		if err != nil {
			t.Errorf("devstack exited with %v after SIGINT:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("devstack did not exit within a minute of SIGINT:\n%s", stderr.String())
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", p)
		if err != nil {
			t.Errorf("port %s still in use after devstack stopped: %v", p, err)
			continue
		}
		l.Close()
	}
	for _, path := range []string{state, printed["logs"]} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after devstack stopped", path)
		}
	}
}

// waitReplayed polls a replica until it has replayed lsn and returns the
// replica's clock at that moment.
// runningDevstack is this command running in a child process.
type runningDevstack struct {
	printed map[string]string // before "ready": the first two fields of each line
	stderr  *devstack.Buffer
	cmd     *exec.Cmd
	exited  chan struct{} // closed once it has exited, with err set
	err     error
}

// startDevstack runs this command (the test binary doubles as it) with
// args and a freshly built API until the test ends, and returns once it
// printed "ready".
func startDevstack(t *testing.T, args ...string) *runningDevstack {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ryw-api")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../api")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/api: %v\n%s", err, out)
	}
	cmd := exec.Command(os.Args[0], append(args, "-api-bin", bin)...)
	cmd.Env = append(os.Environ(), "RYW_TEST_RUN_DEVSTACK=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ds := &runningDevstack{printed: map[string]string{}, stderr: &devstack.Buffer{}, cmd: cmd, exited: make(chan struct{})}
	cmd.Stderr = ds.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		ds.err = cmd.Wait()
		close(ds.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ds.exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
		}
	})
	stderr := ds.stderr

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	printed := ds.printed
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("devstack exited before ready:\n%s", stderr.String())
			}
			if l == "ready" {
				go func() {
					for range lines {
					}
				}()
				return ds
			}
			if f := strings.Fields(l); len(f) >= 2 {
				printed[f[0]] = f[1]
			}
		case <-timeout:
			t.Fatalf("no ready line within 3 minutes:\n%s", stderr.String())
		}
	}
}

func waitReplayed(t *testing.T, conn *pgx.Conn, lsn ryw.LSN) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var done bool
		var at time.Time
		err := conn.QueryRow(t.Context(), "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, clock_timestamp()", lsn.String()).Scan(&done, &at)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return at
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("replica did not replay %s within 30s", lsn)
	return time.Time{}
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestJWTStackAndToken: devstack -auth jwt serves a development issuer that
// the API trusts, and "devstack token <uuid>" prints a token that the API
// takes as that user; the demo header and a missing token are refused.
func TestJWTStackAndToken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole stack")
	}
	ds := startDevstack(t, "-replicas", "1", "-replica-delay", "0", "-addr", "127.0.0.1:0", "-auth", "jwt", "-issuer-addr", "127.0.0.1:0")
	api, issuer := ds.printed["api1"], ds.printed["issuer"]
	if api == "" || !strings.HasPrefix(issuer, "http://127.0.0.1:") {
		t.Fatalf("devstack -auth jwt printed %v; want api1 and an issuer on loopback", ds.printed)
	}
	user := "2c9d5a8e-0b7f-4d3e-9a61-5f0c8e7b1a24"
	var out, errOut strings.Builder
	if err := runToken(t.Context(), []string{"-issuer", issuer, user}, &out, &errOut); err != nil {
		t.Fatalf("devstack token: %v\n%s", err, errOut.String())
	}
	token := strings.TrimSpace(out.String())
	if strings.Count(token, ".") != 2 {
		t.Fatalf("devstack token printed %q; want a JWT", token)
	}
	call := func(method, path, body string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, api+path, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, b := call(http.MethodPost, "/api/me/profile", `{"email":"ada@example.com","name":"Ada"}`,
		"Authorization", "Bearer "+token, "Content-Type", "application/json"); st != http.StatusOK || !strings.Contains(b, `"id":"`+user+`"`) {
		t.Errorf("POST /api/me/profile with the token = %d %s; want 200 as %s", st, b, user)
	}
	if st, b := call(http.MethodGet, "/api/me", "", "Authorization", "Bearer "+token); st != http.StatusOK || !strings.Contains(b, `"Ada"`) {
		t.Errorf("GET /api/me with the token = %d %s", st, b)
	}
	if st, b := call(http.MethodGet, "/api/me", "", "X-Demo-UserId", user); st != http.StatusBadRequest {
		t.Errorf("GET /api/me with X-Demo-UserId in jwt mode = %d %s; want 400", st, b)
	}
	if st, b := call(http.MethodGet, "/api/me", ""); st != http.StatusUnauthorized {
		t.Errorf("GET /api/me without a token = %d %s; want 401", st, b)
	}

	// Without a running issuer, token says what to do.
	errOut.Reset()
	err := runToken(t.Context(), []string{"-issuer", "http://127.0.0.1:1", user}, io.Discard, &errOut)
	if err == nil || !strings.Contains(err.Error(), "-auth jwt") {
		t.Errorf("devstack token with no issuer = %v; want an error naming -auth jwt", err)
	}
	if err := runToken(t.Context(), nil, io.Discard, io.Discard); err == nil {
		t.Error("devstack token without a subject succeeded")
	}
}

// TestJWTWithTheCallersIssuer: with AUTH_MODE=jwt and AUTH_JWKS_URL,
// AUTH_ISSUER and AUTH_AUDIENCE in its environment, devstack serves no
// issuer of its own and the API trusts the caller's: a token of that issuer
// is taken. (devstack used to replace the three with its own issuer's, and
// this token was refused.)
func TestJWTWithTheCallersIssuer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole stack")
	}
	iss, err := devissuer.New("https://issuer.example.test/", "callers-api")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	t.Cleanup(srv.Close)
	jwks := srv.URL + devissuer.JWKSPath
	t.Setenv("AUTH_MODE", "jwt")
	t.Setenv("AUTH_JWKS_URL", jwks)
	t.Setenv("AUTH_ISSUER", iss.Issuer())
	t.Setenv("AUTH_AUDIENCE", iss.Audience())
	ds := startDevstack(t, "-replicas", "1", "-replica-delay", "0", "-addr", "127.0.0.1:0", "-issuer-addr", "127.0.0.1:0")
	if ds.printed["issuer"] != jwks {
		t.Errorf("devstack printed issuer %q; want the caller's %s (printed %v)", ds.printed["issuer"], jwks, ds.printed)
	}
	if strings.Contains(ds.stderr.String(), "DEVELOPMENT ONLY") {
		t.Error("devstack started its own issuer although the caller gave one")
	}
	user := "7d0c8f5e-3b1a-4c2d-9e8f-0a1b2c3d4e5f"
	tok, err := iss.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, ds.printed["api1"]+"/api/me/profile", strings.NewReader(`{"email":"ada@example.com","name":"Ada"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), user) {
		t.Errorf("POST /api/me/profile with the caller's issuer's token = %d %s; want 200 as %s", resp.StatusCode, body, user)
	}
}

// TestJWTWithPartOfAnIssuerIsRefused: only some of the issuer's settings in
// the environment is a mistake devstack names, before it starts anything.
func TestJWTWithPartOfAnIssuerIsRefused(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-replicas", "0")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTH_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "RYW_TEST_RUN_DEVSTACK=1", "AUTH_MODE=jwt", "AUTH_ISSUER=https://issuer.example.test/")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("devstack with AUTH_ISSUER alone: %v; want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "AUTH_JWKS_URL, AUTH_AUDIENCE missing") || strings.Contains(string(out), "building") {
		t.Errorf("devstack with AUTH_ISSUER alone said:\n%s\nwant the missing settings named, before building anything", out)
	}
}

// TestTopologyFlags runs the command with a pooler, the least-privileged
// role and a Redis Cluster: it prints what runs, and the API works through
// them.
func TestTopologyFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole stack")
	}
	ds := startDevstack(t, "-replicas", "1", "-replica-delay", "0", "-addr", "127.0.0.1:0",
		"-pooler", "session", "-least-privilege", "-redis", "cluster", "-redis-replicas", "0")
	for _, k := range []string{"pgbouncer-primary", "pgbouncer-replica1", "redis1", "redis2", "redis3"} {
		if ds.printed[k] == "" {
			t.Errorf("devstack did not print %s; printed %v", k, ds.printed)
		}
	}
	if r := ds.printed["redis"]; strings.Count(r, "addr=") != 2 {
		t.Errorf("devstack printed redis %q; want the cluster's URL with its three nodes", r)
	}
	api := ds.printed["api1"]
	user := "0e9b6a1c-5d4f-4e3a-8b2c-1d0e9f8a7b6c"
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, api+path, strings.NewReader(body))
		req.Header.Set("X-Demo-UserId", user)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, b := call(http.MethodPost, "/api/me/profile", `{"email":"ada@example.com","name":"Ada"}`); st != http.StatusOK {
		t.Fatalf("POST /api/me/profile = %d %s", st, b)
	}
	if st, b := call(http.MethodGet, "/api/me", ""); st != http.StatusOK || !strings.Contains(b, `"Ada"`) {
		t.Errorf("GET /api/me = %d %s", st, b)
	}
	if st, b := call(http.MethodGet, "/readyz", ""); st != http.StatusOK {
		t.Errorf("/readyz = %d %s", st, b)
	}
}
