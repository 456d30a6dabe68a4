package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// stack is a real primary, two streaming replicas and Redis, for the
// package; nil under -short.
var stack *devstack.Stack

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(devstack.RunTests(m, devstack.Options{Replicas: 2}, &stack))
}

// serve runs the service in-process on the test stack, configured as its
// environment would configure it, until the test ends.
func serve(t *testing.T, mode ryw.Mode, options ...func(*ryw.Config)) string {
	t.Helper()
	needStack(t)
	env := map[string]string{
		"DATABASE_URL":          stack.Primary.URL,
		"DATABASE_REPLICA_URLS": stack.ReplicaURLs(),
		"REDIS_URL":             stack.Redis.URL,
		"RYW_MODE":              string(mode),
	}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		o(&cfg.ryw)
	}
	handler, closeApp, err := newApp(t.Context(), cfg.ryw, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		srv.Close()
		if err := closeApp(); err != nil {
			t.Error(err)
		}
	})
	// The notes table reaches every replica before a test reads there.
	caughtUp(t)
	return srv.URL
}

// needStack skips a test that needs real nodes when TestMain started none.
func needStack(t *testing.T) {
	t.Helper()
	if stack == nil {
		t.Skip("needs PostgreSQL and Redis (devstack); run without -short")
	}
}

func caughtUp(t *testing.T) {
	t.Helper()
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
}

// newUser is a caller of its own.
func newUser() string { return "u-" + rand.Text() }

type response struct {
	status   int
	servedBy string
	reason   string
	body     string
}

func (r response) String() string {
	return r.body + " (" + http.StatusText(r.status) + ", served by " + r.servedBy + ", " + r.reason + ")"
}

func do(t *testing.T, method, url, user, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-User-Id", user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header.Get(ryw.ServedByHeader), resp.Header.Get(ryw.ReasonHeader), string(b)}
}

func save(t *testing.T, api, user, note string) {
	t.Helper()
	r := do(t, http.MethodPost, api+"/notes", user, `{"body":"`+note+`"}`)
	if r.status != http.StatusCreated || r.servedBy != ryw.Primary || r.reason != string(ryw.ReasonWrite) {
		t.Fatalf("POST /notes = %s; want 201 from the primary (write)", r)
	}
}

// bodies are the notes a list shows, newest first, comma-separated.
func bodies(t *testing.T, r response) string {
	t.Helper()
	var out struct{ Notes []Note }
	if r.status != http.StatusOK {
		t.Fatalf("list = %s; want 200", r)
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("list = %s: %v", r, err)
	}
	var b []string
	for _, n := range out.Notes {
		b = append(b, n.Body)
	}
	return strings.Join(b, ",")
}

// TestOwnWritesWithEveryReplicaPaused is the guarantee: with every replica
// frozen, a caller's list right after their save shows the save. The
// control (ryw off) reads the same list from a replica and misses it, so
// the test is shown able to fail.
func TestOwnWritesWithEveryReplicaPaused(t *testing.T) {
	tests := []struct {
		mode       ryw.Mode
		wantNotes  string
		wantServer string // "replica": any replica
		wantReason ryw.Reason
	}{
		{ryw.ModeTime, "second,first", ryw.Primary, ryw.ReasonRecentWrite},
		{ryw.ModeLSN, "second,first", ryw.Primary, ryw.ReasonReplicasBehind},
		{ryw.ModeOff, "first", "replica", ryw.ReasonRYWOff}, // the control: the bug
	}
	needStack(t)
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			api := serve(t, tt.mode)
			user := newUser()
			save(t, api, user, "first")
			caughtUp(t) // every replica has "first"
			stack.PauseReplayForTest(t, stack.Replicas...)
			save(t, api, user, "second")

			r := do(t, http.MethodGet, api+"/notes", user, "")
			if got := bodies(t, r); got != tt.wantNotes {
				t.Errorf("notes after saving %q = %q (%s); want %q", "second", got, r, tt.wantNotes)
			}
			served := r.servedBy
			if strings.HasPrefix(served, "replica") {
				served = "replica"
			}
			if served != tt.wantServer || r.reason != string(tt.wantReason) {
				t.Errorf("read served by %s (%s); want %s (%s)", r.servedBy, r.reason, tt.wantServer, tt.wantReason)
			}
		})
	}
}

// TestTimeModeReadsReturnToReplicasAfterTheWindow: once the window after a
// save has passed, the caller's reads go back to a replica that has the
// save. The test reads all along: a read that the primary serves within
// the window must not count as a write, or the caller never leaves it.
func TestTimeModeReadsReturnToReplicasAfterTheWindow(t *testing.T) {
	api := serve(t, ryw.ModeTime, func(c *ryw.Config) { c.Window = 300 * time.Millisecond })
	user := newUser()
	save(t, api, user, "mine")
	waitFor(t, func() bool {
		r := do(t, http.MethodGet, api+"/notes", user, "")
		if got := bodies(t, r); got != "mine" {
			t.Fatalf("read after the save = %q (%s); want %q", got, r, "mine")
		}
		return strings.HasPrefix(r.servedBy, "replica") && r.reason == string(ryw.ReasonNoRecentWrite)
	})
}

// TestLSNModeReadsFromAReplicaOnceItHasTheWrite: once the replicas have
// replayed the caller's save, lsn mode serves the caller's reads from them
// again, and each read on the way shows the save.
func TestLSNModeReadsFromAReplicaOnceItHasTheWrite(t *testing.T) {
	api := serve(t, ryw.ModeLSN)
	user := newUser()
	stack.PauseReplayForTest(t, stack.Replicas...)
	save(t, api, user, "mine")
	if r := do(t, http.MethodGet, api+"/notes", user, ""); bodies(t, r) != "mine" || r.servedBy != ryw.Primary {
		t.Fatalf("read with the replicas paused = %s; want the note, from the primary", r)
	}

	for _, n := range stack.Replicas {
		if err := n.ResumeReplay(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp(t)
	// The balancer learns the replicas' new positions on its next poll.
	waitFor(t, func() bool {
		r := do(t, http.MethodGet, api+"/notes", user, "")
		if got := bodies(t, r); got != "mine" {
			t.Fatalf("read after the replicas resumed = %q (%s); want %q", got, r, "mine")
		}
		return strings.HasPrefix(r.servedBy, "replica") && r.reason == string(ryw.ReasonLSNCaughtUp)
	})
}

// TestOthersNotesMayBeStale: a list that is declared stale-ok is served by
// a replica even right after its owner's save.
func TestOthersNotesMayBeStale(t *testing.T) {
	api := serve(t, ryw.ModeTime)
	owner := newUser()
	stack.PauseReplayForTest(t, stack.Replicas...)
	save(t, api, owner, "fresh")
	r := do(t, http.MethodGet, api+"/users/"+owner+"/notes", newUser(), "")
	if bodies(t, r) != "" || !strings.HasPrefix(r.servedBy, "replica") || r.reason != string(ryw.ReasonStaleOK) {
		t.Errorf("another user's read of the notes = %s; want none yet, from a replica (stale-ok)", r)
	}
}

func TestAnonymousCallersAreRefused(t *testing.T) {
	api := serve(t, ryw.ModeTime)
	for _, req := range []struct{ method, path, body string }{
		{http.MethodGet, "/notes", ""},
		{http.MethodPost, "/notes", `{"body":"x"}`},
		{http.MethodGet, "/users/ada/notes", ""},
	} {
		r := do(t, req.method, api+req.path, "", req.body)
		if r.status != http.StatusUnauthorized || !strings.Contains(r.body, `"unauthenticated"`) {
			t.Errorf("%s %s without %s = %s; want 401 unauthenticated", req.method, req.path, userHeader, r)
		}
	}
	if r := do(t, http.MethodPost, api+"/notes", newUser(), `{"body":""}`); r.status != http.StatusBadRequest {
		t.Errorf("POST /notes with an empty note = %s; want 400", r)
	}
}

func TestLoadConfig(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":          "postgres://app@db:5432/app",
		"DATABASE_REPLICA_URLS": "postgres://app@r1:5432/app?sslmode=disable, east=postgres://app@r2:5432/app?sslmode=disable",
		"RYW_MODE":              "lsn",
	}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := []ryw.Replica{
		{URL: "postgres://app@r1:5432/app?sslmode=disable"},
		{Name: "east", URL: "postgres://app@r2:5432/app?sslmode=disable"},
	}
	if len(cfg.ryw.Replicas) != 2 || cfg.ryw.Replicas[0] != want[0] || cfg.ryw.Replicas[1] != want[1] {
		t.Errorf("replicas = %+v; want %+v", cfg.ryw.Replicas, want)
	}
	if cfg.addr != "127.0.0.1:8081" || cfg.ryw.Mode != ryw.ModeLSN {
		t.Errorf("addr %q, mode %q; want the default address and lsn", cfg.addr, cfg.ryw.Mode)
	}
	if _, err := loadConfig(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("without DATABASE_URL: %v; want an error naming it", err)
	}
}

// waitFor polls cond until it holds, failing the test after 30s.
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
