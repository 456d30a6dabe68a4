package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// These tests drive the whole service over HTTP against the real cluster:
// a primary, two streaming replicas and Redis. Each consistency test runs
// the same steps with RYW_MODE=off as a control, which must see the stale
// value: that shows the test can fail.

type response struct {
	status   int
	servedBy string
	reason   string
	body     []byte
	header   http.Header
}

func (r response) String() string {
	return fmt.Sprintf("%d served-by=%s reason=%s %s", r.status, r.servedBy, r.reason, r.body)
}

// do sends a request as user (none for uuid.Nil); with adds to it.
func do(t *testing.T, method, url string, user uuid.UUID, contentType string, body io.Reader, with ...func(*http.Request)) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if user != uuid.Nil {
		if err := identify(req, user); err != nil {
			t.Fatal(err)
		}
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, f := range with {
		f(req)
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
	return response{resp.StatusCode, resp.Header.Get("X-Served-By"), resp.Header.Get("X-Routing-Reason"), b, resp.Header}
}

func saveProfile(t *testing.T, api string, user uuid.UUID, name string) response {
	t.Helper()
	body := fmt.Sprintf(`{"email":"u@example.com","name":%q,"avatarUrl":"https://example.com/a.png"}`, name)
	r := do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", strings.NewReader(body))
	if r.status != http.StatusOK {
		t.Fatalf("POST /api/me/profile = %s", r)
	}
	return r
}

func getMe(t *testing.T, api string, user uuid.UUID) response {
	t.Helper()
	return do(t, http.MethodGet, api+"/api/me", user, "", nil)
}

// nameIn returns the profile name in a GET /api/me body, or "" for a 404.
func nameIn(t *testing.T, r response) string {
	t.Helper()
	if r.status == http.StatusNotFound {
		return ""
	}
	var p struct{ Name string }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &p) != nil {
		t.Fatalf("GET /api/me = %s", r)
	}
	return p.Name
}

// pauseAll pauses replay on every replica until the test ends.
func pauseAll(t *testing.T) {
	t.Helper()
	stack.PauseReplayForTest(t, stack.Replicas...)
}

// waitReplicasUsable polls the API until a stale-ok read is served by a
// replica: the monitor has seen them healthy.
func waitReplicasUsable(t *testing.T, api string) {
	t.Helper()
	waitFor(t, func() bool {
		return strings.HasPrefix(do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil).servedBy, "replica")
	})
}

// TestReadYourWritesWithPausedReplicas is the guarantee itself: with every
// replica frozen, a user's read right after their write still shows it.
func TestReadYourWritesWithPausedReplicas(t *testing.T) {
	tests := []struct {
		mode       string
		wantFresh  bool
		wantReason string
	}{
		{"time", true, "recent-write"},
		{"off", false, "ryw-off"}, // the control: the bug RYW fixes
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			api, _ := startRun(t, stackEnv(t, "RYW_MODE="+tt.mode))
			waitReplicasUsable(t, api)
			for _, existing := range []bool{true, false} {
				user := uuid.New()
				old := ""
				if existing {
					old = "Old Name"
					saveProfile(t, api, user, old)
					if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
						t.Fatal(err)
					}
				}
				func() {
					pauseAll(t)
					w := saveProfile(t, api, user, "New Name")
					if w.servedBy != "primary" || w.reason != "write" {
						t.Errorf("write: %s", w)
					}
					r := getMe(t, api, user)
					got := nameIn(t, r)
					if tt.wantFresh {
						if got != "New Name" || r.servedBy != "primary" || r.reason != tt.wantReason {
							t.Errorf("existing=%v: read after write = %s; want the new profile from the primary (%s)", existing, r, tt.wantReason)
						}
					} else if got != old || !strings.HasPrefix(r.servedBy, "replica") || r.reason != tt.wantReason {
						t.Errorf("existing=%v: control read = %s; want the stale %q from a replica (%s)", existing, r, old, tt.wantReason)
					}
				}()
			}
		})
	}
}

// TestAfterTheWindowAFreshReplicaServes checks that once the window has
// passed the read moves to a replica, and only to one that has the write:
// replica1 is paused (stale), replica2 live.
func TestAfterTheWindowAFreshReplicaServes(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_WINDOW=300ms"))
	waitReplicasUsable(t, api)
	r1 := stack.Replicas[0]
	stack.PauseReplayForTest(t, r1)
	user := uuid.New()
	saveProfile(t, api, user, "Fresh")

	var served []response
	waitFor(t, func() bool {
		r := getMe(t, api, user)
		served = append(served, r)
		return r.reason == "no-recent-write"
	})
	seen := map[string]bool{}
	for _, r := range served {
		name := nameIn(t, r)
		seen[r.servedBy] = true
		switch {
		case name != "Fresh":
			t.Errorf("a read after the write was stale: %s", r)
		case r.servedBy == "replica1":
			t.Errorf("paused replica1 served a user who wrote after it paused: %s", r)
		case r.reason == "recent-write" && r.servedBy != "primary":
			t.Errorf("inside the window, served by %s", r.servedBy)
		}
	}
	if last := served[len(served)-1]; last.servedBy != "replica2" {
		t.Errorf("after the window: %s; want replica2", last)
	}
	// Many reads later, still never replica1 while it is behind the write.
	for range 20 {
		if r := getMe(t, api, user); r.servedBy != "replica2" || nameIn(t, r) != "Fresh" {
			t.Fatalf("after the window: %s; want the fresh profile from replica2", r)
		}
	}

	// Caught up, replica1 serves the user again.
	if err := r1.ResumeReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(t.Context(), r1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r := getMe(t, api, user)
		return r.servedBy == "replica1" && nameIn(t, r) == "Fresh"
	})
}

func TestProductsAreServedByReplicas(t *testing.T) {
	api, _ := startRun(t, stackEnv(t))
	waitReplicasUsable(t, api)
	for range 10 {
		r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil)
		var list struct {
			Products []struct {
				ID    int64
				Name  string
				Price json.RawMessage // as written: 99.00 must not become 99
			}
		}
		if err := json.Unmarshal(r.body, &list); err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /api/products = %s", r)
		}
		var rows []string
		for _, p := range list.Products {
			rows = append(rows, fmt.Sprintf("%d %s %s", p.ID, p.Name, p.Price))
		}
		const seed = "1 Pro Subscription 19.99; 2 Enterprise Plan 99.00; 3 One-time Add-on 9.99"
		if got := strings.Join(rows, "; "); got != seed || !strings.HasPrefix(r.servedBy, "replica") || r.reason != "stale-ok" {
			t.Errorf("GET /api/products = %s\n(%s); want the seed's products %s from a replica (stale-ok)", r, got, seed)
		}
	}
}

// TestServedByIsTruthful: replica1 is paused and a product exists only on
// the primary and replica2. Whatever node the header names, the body must
// be what that node holds.
func TestServedByIsTruthful(t *testing.T) {
	ctx := t.Context()
	api, _ := startRun(t, stackEnv(t))
	waitReplicasUsable(t, api)
	r1 := stack.Replicas[0]
	sku := "TRUTH-" + uuid.NewString()[:8]
	t.Cleanup(func() {
		_ = stack.Primary.Exec(context.Background(), "DELETE FROM products WHERE sku = $1", sku)
		_ = stack.WaitCaughtUp(context.Background(), stack.Replicas...)
	})
	stack.PauseReplayForTest(t, r1)
	if err := stack.Primary.Exec(ctx, "INSERT INTO products (sku, name, price) VALUES ($1, 'only some nodes', 1)", sku); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, stack.Replicas[1]); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"replica1": false, "replica2": true, "primary": true}
	seen := map[string]int{}
	for i := 0; i < 200 && (seen["replica1"] == 0 || seen["replica2"] == 0); i++ {
		r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil)
		has := bytes.Contains(r.body, []byte(sku))
		if has != want[r.servedBy] {
			t.Fatalf("X-Served-By %s, but the body %s the new product: %s", r.servedBy, map[bool]string{true: "has", false: "lacks"}[has], r)
		}
		seen[r.servedBy]++
	}
	if seen["replica1"] == 0 || seen["replica2"] == 0 {
		t.Errorf("both replicas should serve stale-ok reads; saw %v", seen)
	}

	// With both replicas stopped the reads go to the primary, which has it.
	for _, r := range stack.Replicas {
		r.StopForTest(t)
	}
	for range 5 {
		r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil)
		if r.status != http.StatusOK || r.servedBy != "primary" || !bytes.Contains(r.body, []byte(sku)) {
			t.Errorf("with every replica down: %s; want the primary's answer", r)
		}
	}
}

// TestTwoProcessesShareTheTracker writes through one API process and reads
// through another: the Redis marker carries the write across.
func TestTwoProcessesShareTheTracker(t *testing.T) {
	tests := []struct {
		mode      string
		wantFresh bool
	}{{"time", true}, {"off", false}}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			a := startProcess(t, stackEnv(t, "RYW_MODE="+tt.mode))
			b := startProcess(t, stackEnv(t, "RYW_MODE="+tt.mode))
			waitReplicasUsable(t, b)
			user := uuid.New()
			saveProfile(t, a, user, "Before")
			if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
				t.Fatal(err)
			}
			pauseAll(t)
			saveProfile(t, a, user, "After")
			r := getMe(t, b, user)
			got := nameIn(t, r)
			if tt.wantFresh && (got != "After" || r.servedBy != "primary" || r.reason != "recent-write") {
				t.Errorf("read through the other process = %s; want the write, from the primary", r)
			}
			if !tt.wantFresh && (got != "Before" || !strings.HasPrefix(r.servedBy, "replica")) {
				t.Errorf("control: read through the other process = %s; want the stale profile from a replica", r)
			}
		})
	}
}

// startProcess runs the API as its own OS process until the test ends.
func startProcess(t *testing.T, env map[string]string) string {
	t.Helper()
	cmd, out := mainProcess(t, env)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s logs:\n%s", env["HTTP_ADDR"], out)
		}
	})
	url := "http://" + env["HTTP_ADDR"]
	waitFor(t, func() bool {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return url
}

func TestRedisDownFailsSafe(t *testing.T) {
	ctx := t.Context()
	// A window well above the cache lease: Redis comes back empty, without
	// its list of caches, so the first write after it waits a whole lease
	// (and an eighth), which the window, counted from the mark, must outlast.
	api, logs := startRun(t, stackEnv(t, "RYW_WINDOW=1s"))
	waitReplicasUsable(t, api)
	before, after := uuid.New(), uuid.New()
	saveProfile(t, api, before, "Saved before the outage")
	if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
		t.Fatal(err)
	}

	stack.Redis.StopForTest(t)
	w := saveProfile(t, api, after, "Saved during the outage")
	if w.servedBy != "primary" {
		t.Errorf("write during the outage: %s", w)
	}
	if !strings.Contains(logs.String(), "write committed but not recorded in the tracker") {
		t.Errorf("the failed marker write was not logged:\n%s", logs)
	}
	for _, u := range []uuid.UUID{before, after} {
		r := getMe(t, api, u)
		if r.status != http.StatusOK || r.servedBy != "primary" || r.reason != "tracker-unavailable" {
			t.Errorf("read during the outage: %s; want 200 from the primary (tracker-unavailable)", r)
		}
	}
	if r := getMe(t, api, after); nameIn(t, r) != "Saved during the outage" {
		t.Errorf("read of the outage write: %s", r)
	}
	if r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil); r.status != http.StatusOK || !strings.HasPrefix(r.servedBy, "replica") {
		t.Errorf("stale-ok read during the outage: %s; want a replica", r)
	}

	// Redis back, same process: normal routing resumes.
	if err := stack.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return getMe(t, api, before).reason == "no-recent-write" })
	fresh := uuid.New()
	saveProfile(t, api, fresh, "Saved after the outage")
	if r := getMe(t, api, fresh); r.servedBy != "primary" || r.reason != "recent-write" || nameIn(t, r) != "Saved after the outage" {
		t.Errorf("read after the outage: %s; want recent-write from the primary", r)
	}
}

func TestPrimaryDownAnswers503(t *testing.T) {
	ctx := t.Context()
	api, logs := startRun(t, stackEnv(t))
	waitReplicasUsable(t, api)
	avail, _ := startRun(t, stackEnv(t, "RYW_STALE_READS_WITHOUT_PRIMARY=true"))
	waitReplicasUsable(t, avail)
	user := uuid.New()
	saveProfile(t, api, user, "Before")
	stack.Primary.StopForTest(t)
	t.Cleanup(func() { _ = stack.WaitStreaming(context.Background()) })
	body := `{"email":"u@example.com","name":"During"}`
	w := do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", strings.NewReader(body))
	if w.status != http.StatusServiceUnavailable || !bytes.Contains(w.body, []byte(`"code":"unavailable"`)) {
		t.Errorf("write with the primary down: %s; want 503 unavailable", w)
	}
	if line := accessLine(logs, w.header.Get("X-Request-Id")); !strings.Contains(line, "status=503 ") {
		t.Errorf("access line of the 503 = %q; want status=503", line)
	}
	// The user wrote a moment ago: only the primary may answer, and it
	// cannot, so 503 rather than stale data.
	if r := getMe(t, api, user); r.status != http.StatusServiceUnavailable {
		t.Errorf("own read inside the window with the primary down: %s; want 503", r)
	}
	// Stale-ok reads: once the primary has not answered for the fence
	// lease, no replica is known to be on the history a failover will
	// keep, and they go to the primary (503) ...
	waitFor(t, func() bool {
		r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil)
		return r.status == http.StatusServiceUnavailable && r.reason == "fence-unknown"
	})
	// ... unless the operator chose availability: then replicas still
	// serve them.
	if r := do(t, http.MethodGet, avail+"/api/products", uuid.Nil, "", nil); r.status != http.StatusOK || !strings.HasPrefix(r.servedBy, "replica") {
		t.Errorf("stale-ok read with the primary down and RYW_STALE_READS_WITHOUT_PRIMARY=true: %s; want a replica's answer", r)
	}
	if err := stack.Primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", strings.NewReader(body)).status == http.StatusOK
	})
}

// TestBadInputIsRefusedAndNothingIsWritten covers every malformed request:
// the right status and error code, a message naming the field, and no row.
func TestBadInputIsRefusedAndNothingIsWritten(t *testing.T) {
	api, _ := startRun(t, stackEnv(t))
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		mention     string // the message must contain this
	}{
		{"malformed JSON", "application/json", `{"email":`, 400, "malformed_json", "not valid JSON"},
		{"not an object", "application/json", `["a"]`, 400, "malformed_json", "JSON object"},
		{"empty body", "application/json", ``, 400, "malformed_json", "empty"},
		{"two objects", "application/json", `{"email":"a@example.com","name":"A"}{}`, 400, "malformed_json", "nothing after it"},
		{"unknown field", "application/json", `{"email":"a@example.com","name":"A","admin":true}`, 400, "unknown_field", `"admin"`},
		{"wrong type", "application/json", `{"email":5,"name":"A"}`, 400, "invalid_input", "email"},
		{"missing email", "application/json", `{"name":"A"}`, 400, "invalid_input", "email is required"},
		{"invalid email", "application/json", `{"email":"not-an-address","name":"A"}`, 400, "invalid_input", "email must be a valid address"},
		{"display-name email", "application/json", `{"email":"Ada <ada@example.com>","name":"A"}`, 400, "invalid_input", "email"},
		{"over-long email", "application/json", `{"email":"` + long(243) + `@example.com","name":"A"}`, 400, "invalid_input", "email must be at most 254"},
		{"missing name", "application/json", `{"email":"a@example.com"}`, 400, "invalid_input", "name is required"},
		{"blank name", "application/json", `{"email":"a@example.com","name":"   "}`, 400, "invalid_input", "name is required"},
		{"over-long name", "application/json", `{"email":"a@example.com","name":"` + long(201) + `"}`, 400, "invalid_input", "name must be at most 200"},
		{"NUL in name", "application/json", `{"email":"a@example.com","name":"a\u0000b"}`, 400, "invalid_input", "name must not contain NUL"},
		{"ftp avatar", "application/json", `{"email":"a@example.com","name":"A","avatarUrl":"ftp://example.com/a.png"}`, 400, "invalid_input", "avatarUrl must be an http"},
		{"script avatar", "application/json", `{"email":"a@example.com","name":"A","avatarUrl":"javascript:alert(1)"}`, 400, "invalid_input", "avatarUrl"},
		{"relative avatar", "application/json", `{"email":"a@example.com","name":"A","avatarUrl":"/a.png"}`, 400, "invalid_input", "avatarUrl"},
		{"over-long avatar", "application/json", `{"email":"a@example.com","name":"A","avatarUrl":"https://example.com/` + long(2030) + `"}`, 400, "invalid_input", "avatarUrl must be at most 2048"},
		{"body over 64 KiB", "application/json", `{"email":"a@example.com","name":"` + long(70_000) + `"}`, 413, "body_too_large", "65536"},
		{"text/plain", "text/plain", `{"email":"a@example.com","name":"A"}`, 415, "unsupported_media_type", "application/json"},
		{"no content type", "", `{"email":"a@example.com","name":"A"}`, 415, "unsupported_media_type", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := uuid.New()
			r := do(t, http.MethodPost, api+"/api/me/profile", user, tt.contentType, strings.NewReader(tt.body))
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(r.body, &e); err != nil {
				t.Fatalf("not the JSON error shape: %s", r)
			}
			if r.status != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.mention) {
				t.Errorf("= %s; want %d %s mentioning %q", r, tt.status, tt.code, tt.mention)
			}
			assertNoProfile(t, user)
		})
	}

	t.Run("body over 64 KiB without Content-Length", func(t *testing.T) {
		user := uuid.New()
		pr, pw := io.Pipe()
		go func() {
			fmt.Fprintf(pw, `{"email":"a@example.com","name":"%s"}`, long(70_000))
			pw.Close()
		}()
		r := do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", pr)
		if r.status != http.StatusRequestEntityTooLarge || !bytes.Contains(r.body, []byte("body_too_large")) {
			t.Errorf("chunked oversized body = %s; want 413", r)
		}
		assertNoProfile(t, user)
	})

	t.Run("malformed user id", func(t *testing.T) {
		demoOnly(t)
		for _, id := range []string{"nope", "{" + uuid.NewString() + "}", uuid.Nil.String(), "' OR 1=1 --"} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, api+"/api/me", nil)
			req.Header.Set("X-Demo-UserId", id)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(b, []byte(`"code":"invalid_user_id"`)) || resp.Header.Get("X-Served-By") != "none" {
				t.Errorf("X-Demo-UserId %q: %d %s %v", id, resp.StatusCode, b, resp.Header)
			}
		}
	})

	t.Run("limits are inclusive", func(t *testing.T) {
		user := uuid.New()
		body := fmt.Sprintf(`{"email":"%s@example.com","name":"%s","avatarUrl":"https://example.com/%s"}`, long(242), long(200), long(2028))
		r := do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", strings.NewReader(body))
		if r.status != http.StatusOK {
			t.Errorf("a profile at every limit = %s; want 200", r)
		}
	})
}

// assertNoProfile checks on the primary that nothing was written.
func assertNoProfile(t *testing.T, user uuid.UUID) {
	t.Helper()
	var n int
	if err := stack.Primary.QueryRow(t.Context(), []any{&n}, "SELECT count(*) FROM users WHERE id = $1", user); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("a refused request wrote a profile")
	}
}

func TestDefaultDemoUserAndNotFound(t *testing.T) {
	demoOnly(t)
	api, _ := startRun(t, stackEnv(t))
	user := uuid.New()
	r := getMe(t, api, user)
	if r.status != http.StatusNotFound || !bytes.Contains(r.body, []byte(`"code":"not_found"`)) || r.servedBy == "" {
		t.Errorf("GET /api/me before any profile = %s; want 404 in the error shape", r)
	}
	// Without the header the default demo user applies.
	w := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(`{"email":"demo@example.com","name":"Demo"}`))
	if w.status != http.StatusOK || !bytes.Contains(w.body, []byte(`"id":"11111111-1111-4111-8111-111111111111"`)) {
		t.Errorf("POST without X-Demo-UserId = %s; want the default demo user's profile", w)
	}
}

// TestAvatarURLIsNullWhenAbsent: as the seed stores it, a profile without an
// avatar has avatar_url NULL, shown as null (not ""), whether the field was
// left out, null or empty.
func TestAvatarURLIsNullWhenAbsent(t *testing.T) {
	api, _ := startRun(t, stackEnv(t))
	user := uuid.New()
	save := func(body string) response {
		t.Helper()
		r := do(t, http.MethodPost, api+"/api/me/profile", user, "application/json", strings.NewReader(body))
		if r.status != http.StatusOK {
			t.Fatalf("POST %s = %s", body, r)
		}
		return r
	}
	stored := func() *string {
		var v *string
		if err := stack.Primary.QueryRow(t.Context(), []any{&v}, "SELECT avatar_url FROM users WHERE id = $1", user); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, body := range []string{
		`{"email":"a@example.com","name":"A"}`,
		`{"email":"a@example.com","name":"A","avatarUrl":null}`,
		`{"email":"a@example.com","name":"A","avatarUrl":""}`,
	} {
		r := save(body)
		if !strings.Contains(string(r.body), `"avatarUrl":null`) {
			t.Errorf("POST %s = %s; want avatarUrl null", body, r)
		}
		if v := stored(); v != nil {
			t.Errorf("POST %s stored avatar_url %q; want NULL", body, *v)
		}
		if g := getMe(t, api, user); !strings.Contains(string(g.body), `"avatarUrl":null`) {
			t.Errorf("GET /api/me after %s = %s; want avatarUrl null", body, g)
		}
	}
	r := save(`{"email":"a@example.com","name":"A","avatarUrl":"https://example.com/a.png"}`)
	if !strings.Contains(string(r.body), `"avatarUrl":"https://example.com/a.png"`) {
		t.Errorf("with an avatar = %s", r)
	}
}
