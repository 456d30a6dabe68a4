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

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// stack is a real primary, two streaming replicas and Redis, for the
// package; nil under -short.
var stack *devstack.Stack

func TestMain(m *testing.M) {
	flag.Parse()
	gin.SetMode(gin.TestMode)
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
	// The profiles table reaches every replica before a test reads there.
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
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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

func save(t *testing.T, api, user, name string) {
	t.Helper()
	r := do(t, http.MethodPut, api+"/profile", user, `{"displayName":"`+name+`"}`)
	if r.status != http.StatusOK || r.servedBy != ryw.Primary || r.reason != string(ryw.ReasonWrite) {
		t.Fatalf("PUT /profile = %s; want 200 from the primary (write)", r)
	}
}

// name is the display name a read shows.
func name(t *testing.T, r response) string {
	t.Helper()
	var p Profile
	if r.status != http.StatusOK {
		t.Fatalf("read = %s; want 200", r)
	}
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("read = %s: %v", r, err)
	}
	return p.DisplayName
}

// TestOwnWritesWithEveryReplicaPaused is the guarantee: with every replica
// frozen, a caller's read right after their save shows the save. The
// control (ryw off) reads from a replica and sees the old profile, so the
// test is shown able to fail.
func TestOwnWritesWithEveryReplicaPaused(t *testing.T) {
	tests := []struct {
		mode       ryw.Mode
		wantName   string
		wantServer string // "replica": any replica
		wantReason ryw.Reason
	}{
		{ryw.ModeTime, "second", ryw.Primary, ryw.ReasonRecentWrite},
		{ryw.ModeLSN, "second", ryw.Primary, ryw.ReasonReplicasBehind},
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

			r := do(t, http.MethodGet, api+"/profile", user, "")
			if got := name(t, r); got != tt.wantName {
				t.Errorf("name after saving %q = %q (%s); want %q", "second", got, r, tt.wantName)
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
		r := do(t, http.MethodGet, api+"/profile", user, "")
		if got := name(t, r); got != "mine" {
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
	if r := do(t, http.MethodGet, api+"/profile", user, ""); name(t, r) != "mine" || r.servedBy != ryw.Primary {
		t.Fatalf("read with the replicas paused = %s; want the profile, from the primary", r)
	}

	for _, n := range stack.Replicas {
		if err := n.ResumeReplay(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp(t)
	// The balancer learns the replicas' new positions on its next poll.
	waitFor(t, func() bool {
		r := do(t, http.MethodGet, api+"/profile", user, "")
		if got := name(t, r); got != "mine" {
			t.Fatalf("read after the replicas resumed = %q (%s); want %q", got, r, "mine")
		}
		return strings.HasPrefix(r.servedBy, "replica") && r.reason == string(ryw.ReasonLSNCaughtUp)
	})
}

// TestOthersProfilesMayBeStale: a read declared stale-ok is served by a
// replica even right after the owner's save.
func TestOthersProfilesMayBeStale(t *testing.T) {
	api := serve(t, ryw.ModeTime)
	owner := newUser()
	save(t, api, owner, "old")
	caughtUp(t)
	stack.PauseReplayForTest(t, stack.Replicas...)
	save(t, api, owner, "new")
	r := do(t, http.MethodGet, api+"/users/"+owner+"/profile", newUser(), "")
	if name(t, r) != "old" || !strings.HasPrefix(r.servedBy, "replica") || r.reason != string(ryw.ReasonStaleOK) {
		t.Errorf("another user's read of the profile = %s; want the old one, from a replica (stale-ok)", r)
	}
}

func TestErrors(t *testing.T) {
	api := serve(t, ryw.ModeTime)
	tests := []struct {
		method, path, user, body string
		wantStatus               int
		wantCode                 string
	}{
		{http.MethodGet, "/profile", "", "", http.StatusUnauthorized, "unauthenticated"},
		{http.MethodPut, "/profile", "", `{"displayName":"x"}`, http.StatusUnauthorized, "unauthenticated"},
		{http.MethodGet, "/users/ada/profile", "", "", http.StatusUnauthorized, "unauthenticated"},
		{http.MethodGet, "/profile", "not a user id", "", http.StatusUnauthorized, "unauthenticated"},
		{http.MethodGet, "/profile", newUser(), "", http.StatusNotFound, "not_found"},
		{http.MethodPut, "/profile", newUser(), `{"displayName":""}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPut, "/profile", newUser(), `{`, http.StatusBadRequest, "bad_request"},
	}
	for _, tt := range tests {
		r := do(t, tt.method, api+tt.path, tt.user, tt.body)
		if r.status != tt.wantStatus || !strings.Contains(r.body, `"code":"`+tt.wantCode+`"`) {
			t.Errorf("%s %s as %q with %q = %s; want %d %s", tt.method, tt.path, tt.user, tt.body, r, tt.wantStatus, tt.wantCode)
		}
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
	if cfg.addr != "127.0.0.1:8082" || cfg.ryw.Mode != ryw.ModeLSN {
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
