package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/config"
	"github.com/ryw-go/ryw/internal/devissuer"
	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/migrations"
	"github.com/ryw-go/ryw/services"
)

var stack *devstack.Stack

// How the tests identify users: RYW_TEST_AUTH=jwt runs the suite with
// bearer tokens from an in-process issuer instead of X-Demo-UserId (make
// test runs it both ways). The issuer runs either way, for the jwt tests.
var (
	testAuth      = config.AuthDemo
	testIssuer    *devissuer.Issuer
	testIssuerURL string
	testTokens    sync.Map // uuid.UUID -> bearer token
)

func TestMain(m *testing.M) {
	// The test binary doubles as the api binary, so that tests can check
	// what the process itself does: exit codes, signals.
	if os.Getenv("RYW_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	redis.SetLogger(quietRedis{})
	if v := os.Getenv("RYW_TEST_AUTH"); v != "" {
		testAuth = v
	}
	var err error
	if testIssuer, err = devissuer.New("https://issuer.ryw.test/", "ryw-api"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := httptest.NewServer(testIssuer.Handler())
	testIssuerURL = srv.URL
	// RYW_TEST_POOLER=transaction|session runs the suite with a PgBouncer
	// in front of every node (make test runs the consistency tests so).
	code := devstack.RunTests(m, devstack.Options{Replicas: 2, Pooler: os.Getenv("RYW_TEST_POOLER")}, &stack)
	srv.Close()
	os.Exit(code)
}

// jwtEnv is the environment of an API that trusts the test issuer.
func jwtEnv() []string {
	return []string{
		"AUTH_MODE=jwt", "AUTH_JWKS_URL=" + testIssuerURL + devissuer.JWKSPath,
		"AUTH_ISSUER=" + testIssuer.Issuer(), "AUTH_AUDIENCE=" + testIssuer.Audience(),
	}
}

// identify makes req come from user, the way the suite's auth mode says.
// Safe in any goroutine: it reports instead of failing the test.
func identify(req *http.Request, user uuid.UUID) error {
	if testAuth != config.AuthJWT {
		req.Header.Set("X-Demo-UserId", user.String())
		return nil
	}
	tok, err := bearerFor(user)
	req.Header.Set("Authorization", "Bearer "+tok)
	return err
}

// bearerFor is a token of the test issuer for user (minted once).
func bearerFor(user uuid.UUID) (string, error) {
	if tok, ok := testTokens.Load(user); ok {
		return tok.(string), nil
	}
	tok, err := testIssuer.Mint(user.String(), time.Hour)
	if err != nil {
		return "", err
	}
	testTokens.Store(user, tok)
	return tok, nil
}

// demoOnly skips a test about the demo header when the suite runs in jwt
// mode.
func demoOnly(t *testing.T) {
	if testAuth != config.AuthDemo {
		t.Skip("about X-Demo-UserId, which jwt mode refuses (see auth_test.go)")
	}
}

// stackEnv is the API's environment for the test stack, plus extra.
func stackEnv(t *testing.T, extra ...string) map[string]string {
	env := map[string]string{"HTTP_ADDR": "127.0.0.1:" + freePort(t)}
	if testAuth == config.AuthJWT {
		extra = append(jwtEnv(), extra...)
	}
	for _, kv := range append(stack.Env(), extra...) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// startRun runs the API in-process until the test ends and returns its URL
// once /healthz answers.
func startRun(t *testing.T, env map[string]string) (string, *devstack.Buffer) {
	t.Helper()
	wait := launch(t, env)
	return wait()
}

// launch starts the API in-process, stopped when the test ends; the returned
// function waits until /healthz answers. Call it from the test goroutine.
func launch(t *testing.T, env map[string]string) (wait func() (string, *devstack.Buffer)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &devstack.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v\nlogs:\n%s", err, logs)
		} else if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	url := "http://" + env["HTTP_ADDR"]
	return func() (string, *devstack.Buffer) {
		t.Helper()
		waitFor(t, func() bool {
			select {
			case err := <-done:
				done <- err
				t.Fatalf("run exited during start-up: %v\nlogs:\n%s", err, logs)
			default:
			}
			resp, err := http.Get(url + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		return url, logs
	}
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readyz(t *testing.T, url string) (int, services.Readiness) {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r services.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

// upMap summarises a readiness report as name -> up.
func upMap(r services.Readiness) map[string]bool {
	m := map[string]bool{r.Primary.Name: r.Primary.Up, r.Redis.Name: r.Redis.Up}
	for _, c := range r.Replicas {
		m[c.Name] = c.Up
	}
	return m
}

func TestServesHealthReadinessAndSwagger(t *testing.T) {
	url, _ := startRun(t, stackEnv(t))

	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Errorf("/healthz = %d %s", resp.StatusCode, body)
	}

	code, r := readyz(t, url)
	want := map[string]bool{"primary": true, "replica1": true, "replica2": true, "redis": true}
	if code != http.StatusOK || r.Status != services.StatusReady || fmt.Sprint(upMap(r)) != fmt.Sprint(want) {
		t.Errorf("/readyz = %d %+v, want 200 ready with %v", code, r, want)
	}

	resp, err = http.Get(url + "/swagger/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/swagger/index.html = %d", resp.StatusCode)
	}
	// The seed says Swagger UI is at /swagger: every spelling leads to it.
	for _, path := range []string{"/swagger", "/swagger/", "/swagger/index.html"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "swagger-ui") || resp.Request.URL.Path != "/swagger/index.html" {
			t.Errorf("GET %s = %d at %s; want Swagger UI at /swagger/index.html", path, resp.StatusCode, resp.Request.URL.Path)
		}
	}
	resp, err = http.Get(url + "/swagger/doc.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"/readyz"`) {
		t.Errorf("/swagger/doc.json does not document /readyz: %.200s", body)
	}
}

func TestUnknownRouteAnswersTheJSONErrorShape(t *testing.T) {
	url, _ := startRun(t, stackEnv(t))
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, "not_found"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "method_not_allowed"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, url+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
			t.Errorf("%s %s = %d %+v (%v), want %d %s", tt.method, tt.path, resp.StatusCode, body, err, tt.status, tt.code)
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: no X-Request-Id in the response", tt.method, tt.path)
		}
	}
}

func TestReadinessFollowsDependencies(t *testing.T) {
	ctx := t.Context()
	url, _ := startRun(t, stackEnv(t, "READYZ_DETAILS=true"))

	// A replica and Redis down: degraded, still 200 (the primary serves).
	stack.Replicas[1].StopForTest(t)
	stack.Redis.StopForTest(t)
	code, r := readyz(t, url)
	if code != http.StatusOK || r.Status != services.StatusDegraded || upMap(r)["replica2"] || upMap(r)["redis"] || !upMap(r)["replica1"] {
		t.Errorf("with replica2 and Redis down: /readyz = %d %+v", code, r)
	}

	// The primary down: 503.
	stack.Primary.StopForTest(t)
	code, r = readyz(t, url)
	if code != http.StatusServiceUnavailable || r.Status != services.StatusUnavailable || r.Primary.Up || r.Primary.Error == "" {
		t.Errorf("with the primary down: /readyz = %d %+v, want 503 unavailable", code, r)
	}

	// Everything back: ready again, without restarting the API.
	for _, start := range []func(context.Context) error{stack.Primary.Start, stack.Replicas[1].Start, stack.Redis.Start} {
		if err := start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool {
		code, r := readyz(t, url)
		return code == http.StatusOK && r.Status == services.StatusReady
	})
}

func TestStartsWhileAReplicaAndRedisAreDown(t *testing.T) {
	ctx := t.Context()
	stack.Replicas[0].StopForTest(t)
	stack.Redis.StopForTest(t)

	url, logs := startRun(t, stackEnv(t))
	for _, want := range []string{`replica unavailable at start-up; it is retried on use" replica=replica1`, "redis unavailable at start-up"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("start-up log lacks %q:\n%s", want, logs)
		}
	}
	code, r := readyz(t, url)
	if code != http.StatusOK || r.Status != services.StatusDegraded {
		t.Errorf("/readyz = %d %+v, want 200 degraded", code, r)
	}

	if err := stack.Replicas[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, r := readyz(t, url)
		return r.Status == services.StatusReady
	})
}

func TestMigratesThePrimaryAtStartUp(t *testing.T) {
	startRun(t, stackEnv(t))
	var products int
	if err := stack.Primary.QueryRow(t.Context(), []any{&products}, "SELECT count(*) FROM products"); err != nil {
		t.Fatal(err)
	}
	if products != 3 {
		t.Errorf("products = %d after start-up, want the 3 seed products", products)
	}
}

// TestInFlightRequestsFinishOnShutdown checks serveUntil's contract: once
// shutdown begins, new connections are refused, and a request already being
// served completes.
func TestInFlightRequestsFinishOnShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, "finished")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- serveUntil(ctx, srv, ln, 10*time.Second, slog.New(slog.DiscardHandler)) }()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered
	cancel()
	// Shutdown closes the listener first: wait until it refuses.
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-served:
		t.Fatalf("server returned %v while a request was in flight", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "finished" {
		t.Errorf("in-flight request got %q, %v; want it to finish", r.body, r.err)
	}
	if err := <-served; err != nil {
		t.Errorf("serveUntil = %v, want nil after a graceful shutdown", err)
	}
}

// mainProcess starts this test binary as the api program.
func mainProcess(t *testing.T, env map[string]string) (*exec.Cmd, *devstack.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{"RYW_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &devstack.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

func TestBadConfigurationExitsWithOneLine(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"negative window", map[string]string{"DATABASE_URL": stack.Primary.URL, "RYW_WINDOW": "-1s"},
			`ryw api: config: RYW_WINDOW must be a positive duration, got "-1s"`},
		{"no primary", map[string]string{},
			"ryw api: config: DATABASE_URL is required"},
		{"password not echoed", map[string]string{"DATABASE_URL": "mysql://u:hunter2@db/ryw"},
			`ryw api: config: DATABASE_URL must be a postgres:// URL, got "mysql://u:xxxxx@db/ryw"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, out := mainProcess(t, tt.env)
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit = %v, want a non-zero exit code; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("output = %q, want one line starting %q", out, tt.want)
			}
		})
	}
}

func TestSIGTERMStopsGracefully(t *testing.T) {
	env := stackEnv(t)
	cmd, out := mainProcess(t, env)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + env["HTTP_ADDR"] + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM the process exited with %v; output:\n%s", err, out)
	}
	if !strings.Contains(out.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log:\n%s", out)
	}
}

func TestTwoInstancesMigrateAtOnce(t *testing.T) {
	// A fresh database, so that both really have work to do.
	ctx := t.Context()
	name := fmt.Sprintf("twoinstances_%d", time.Now().UnixNano())
	if err := stack.Primary.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	dbURL := strings.Replace(stack.Primary.URL, "/ryw?", "/"+name+"?", 1)
	env1 := stackEnv(t, "DATABASE_URL="+dbURL)
	env2 := stackEnv(t, "DATABASE_URL="+dbURL)
	wait1, wait2 := launch(t, env1), launch(t, env2)
	wait1()
	wait2()

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	version, err := migrations.Version(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var products int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM products").Scan(&products); err != nil {
		t.Fatal(err)
	}
	if version != 7 || products != 3 {
		t.Errorf("after two concurrent start-ups: schema version %d, %d products; want 7 and 3", version, products)
	}
}
