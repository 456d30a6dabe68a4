package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
	for _, args := range [][]string{
		{"-replicas", "-1"}, {"-replica-delay", "-1s"}, {"-mode", "fast"}, {"-instances", "0"}, {"extra"}, {"-bogus"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
}

// TestOneCommandStack runs the command as a user would: it must bring up the
// primary, streaming replicas (the last one delayed), Redis and the API,
// print the URLs and "ready", and on SIGINT stop everything it started.
func TestOneCommandStack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole stack")
	}
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "ryw-api")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../api")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/api: %v\n%s", err, out)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	const delay = 700 * time.Millisecond

	cmd := exec.Command(os.Args[0],
		"-replicas", "2", "-replica-delay", delay.String(), "-instances", "2", "-addr", "127.0.0.1:0",
		"-state", state, "-api-bin", bin)
	cmd.Env = append(os.Environ(), "RYW_TEST_RUN_DEVSTACK=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr devstack.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	printed := map[string]string{}
	timeout := time.After(3 * time.Minute)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("devstack exited before ready:\n%s", stderr.String())
			}
			if l == "ready" {
				break wait
			}
			if f := strings.Fields(l); len(f) >= 2 {
				printed[f[0]] = f[1]
			}
		case <-timeout:
			t.Fatalf("no ready line within 3 minutes:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()

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
	case err := <-exited:
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
