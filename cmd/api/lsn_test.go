package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/ryw"
)

// lsnResponse is a write's response and the causal token it carried.
type lsnResponse struct {
	response
	token  string
	cookie string
}

func post(t *testing.T, api string, user uuid.UUID, name string) lsnResponse {
	t.Helper()
	r := lsnResponse{response: saveProfile(t, api, user, name)}
	r.token = r.header.Get("X-RYW-Token")
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "ryw_token" {
			r.cookie = c.Value
		}
	}
	return r
}

// getWith reads /api/me, sending the token in the header ("header"), the
// cookie ("cookie") or not at all ("").
func getWith(t *testing.T, api string, user uuid.UUID, token, via string) response {
	t.Helper()
	return do(t, http.MethodGet, api+"/api/me", user, "", nil, func(req *http.Request) {
		switch via {
		case "header":
			req.Header.Set("X-RYW-Token", token)
		case "cookie":
			req.AddCookie(&http.Cookie{Name: "ryw_token", Value: token})
		}
	})
}

// TestLSNModeNeverReadsFromTheReplicaThatIsBehind is the regression test
// for gitlab-org/gitlab#413203: with two replicas of which only one has
// the user's write, reads go to that one or to the primary, never to the
// other. The control (RYW_MODE=off) is served stale by the lagging one.
func TestLSNModeNeverReadsFromTheReplicaThatIsBehind(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn"))
	control, _ := startRun(t, stackEnv(t, "RYW_MODE=off"))
	waitReplicasUsable(t, api)
	waitReplicasUsable(t, control)
	r1 := stack.Replicas[0]
	stack.PauseReplayForTest(t, r1)

	served := map[string]int{}
	for i := range 40 {
		user := uuid.New()
		w := post(t, api, user, "v"+strconv.Itoa(i))
		if w.token == "" || w.cookie != w.token {
			t.Fatalf("write response token %q, cookie %q; want the same token in both", w.token, w.cookie)
		}
		// s2.<system>.<timeline>.<write LSN>.<timeline>.<seen LSN>.<pin>.<signature>
		f := strings.Split(w.token, ".")
		if len(f) != 8 || f[0] != "s2" || f[7] == "" {
			t.Fatalf("token %q; want a signed session", w.token)
		}
		if lsn, err := ryw.ParseLSN(f[3]); err != nil || lsn == 0 {
			t.Fatalf("token %q: write position %q, %v; want the write's WAL position", w.token, f[3], err)
		}
		r := getMe(t, api, user)
		served[r.servedBy]++
		if nameIn(t, r) != "v"+strconv.Itoa(i) {
			t.Fatalf("read after write = %s; want v%d", r, i)
		}
		switch {
		case r.servedBy == "replica1":
			t.Fatalf("paused replica1 served a read that needs a write it has not replayed: %s", r)
		case r.servedBy == "replica2" && r.reason != "lsn-caught-up":
			t.Errorf("replica2 served with reason %q", r.reason)
		case r.servedBy == "primary" && r.reason != "replicas-behind":
			t.Errorf("the primary served with reason %q", r.reason)
		}
	}
	if served["replica2"] == 0 {
		t.Errorf("the caught-up replica2 never served a read: %v", served)
	}

	// The control: without read-your-writes, the lagging replica answers
	// with what it has, which is not the write.
	sawStale := false
	for i := 0; i < 200 && !sawStale; i++ {
		user := uuid.New()
		post(t, control, user, "written")
		r := getMe(t, control, user)
		sawStale = r.servedBy == "replica1" && nameIn(t, r) == ""
	}
	if !sawStale {
		t.Error("control: RYW_MODE=off never read the stale replica1")
	}

	// Once replica1 has caught up it serves reads again.
	if err := r1.ResumeReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(t.Context(), r1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		user := uuid.New()
		post(t, api, user, "back")
		r := getMe(t, api, user)
		return r.servedBy == "replica1" && r.reason == "lsn-caught-up" && nameIn(t, r) == "back"
	})
}

func TestLSNModeWithEveryReplicaPaused(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn"))
	waitReplicasUsable(t, api)
	pauseAll(t)
	for i := range 5 {
		user := uuid.New()
		post(t, api, user, "mine")
		r := getMe(t, api, user)
		if r.servedBy != "primary" || r.reason != "replicas-behind" || nameIn(t, r) != "mine" {
			t.Errorf("read %d after write with every replica paused = %s; want the primary (replicas-behind)", i, r)
		}
	}
	for range 5 {
		r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil)
		if r.status != http.StatusOK || !strings.HasPrefix(r.servedBy, "replica") || r.reason != "stale-ok" {
			t.Errorf("stale-ok read with replicas paused = %s; want a replica", r)
		}
	}
	// A user with no write reads from any healthy replica.
	if r := getMe(t, api, uuid.New()); !strings.HasPrefix(r.servedBy, "replica") || r.reason != "no-token" {
		t.Errorf("read of a user who never wrote = %s; want a replica (no-token)", r)
	}
}

// TestLSNModeMaxWait: with RYW_MAX_WAIT, a read waits for a replica to
// replay the token instead of going to the primary.
func TestLSNModeMaxWait(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn", "RYW_MAX_WAIT=20s"))
	waitReplicasUsable(t, api)
	pauseAll(t)
	user := uuid.New()
	post(t, api, user, "waited for")
	got := make(chan loadResult, 1)
	go func() { got <- loadRequest(http.DefaultClient, http.MethodGet, api+"/api/me", user, "") }()
	// Whether the read is already waiting or not, once replica2 replays
	// the write it must be the one to answer.
	if err := stack.Replicas[1].ResumeReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.servedBy != "replica2" || r.reason != "lsn-caught-up" || !strings.Contains(r.body, "waited for") {
		t.Errorf("read with RYW_MAX_WAIT = %+v; want replica2 once it replayed the write", r)
	}
}

// TestLSNModeWhileRedisIsDown: with Redis down nothing says what a user
// wrote, so an lsn-mode read goes to the primary, as in time mode; with
// RYW_UNKNOWN_WRITES=replica, to a replica that has replayed everything the
// primary had when the read arrived, or to the primary. Never to the
// paused replica1, token or not. Writes still answer with their token.
func TestLSNModeWhileRedisIsDown(t *testing.T) {
	apis := []struct {
		env   string
		nodes []string // where its reads may go
		url   string
	}{
		{env: "RYW_UNKNOWN_WRITES=primary", nodes: []string{"primary"}},
		{env: "RYW_UNKNOWN_WRITES=replica", nodes: []string{"primary", "replica2"}},
	}
	for i := range apis {
		apis[i].url, _ = startRun(t, stackEnv(t, "RYW_MODE=lsn", apis[i].env))
		waitReplicasUsable(t, apis[i].url)
	}
	control, _ := startRun(t, stackEnv(t, "RYW_MODE=off"))
	waitReplicasUsable(t, control)
	stack.PauseReplayForTest(t, stack.Replicas[0])
	stack.Redis.StopForTest(t)

	for _, a := range apis {
		served := map[string]int{}
		for i := range 6 {
			user := uuid.New()
			w := post(t, a.url, user, "kept")
			if w.token == "" || w.reason != "write-fenced" {
				t.Fatalf("%s: write while Redis is down: token %q, reason %q; want a token, write-fenced", a.env, w.token, w.reason)
			}
			via := []string{"header", "cookie", ""}[i%3]
			r := getWith(t, a.url, user, w.token, via)
			served[r.servedBy]++
			if nameIn(t, r) != "kept" || r.reason != "tracker-unavailable" || !slices.Contains(a.nodes, r.servedBy) {
				t.Errorf("%s: read (token via %q) with Redis down = %s; want fresh, from %v, tracker-unavailable", a.env, via, r, a.nodes)
			}
		}
		t.Logf("%s: served by %v", a.env, served)
	}

	// The control: the same client, token and all, without RYW.
	sawStale := false
	for i := 0; i < 200 && !sawStale; i++ {
		user := uuid.New()
		w := post(t, control, user, "kept")
		r := getWith(t, control, user, w.token, "header")
		sawStale = r.servedBy == "replica1" && nameIn(t, r) == ""
	}
	if !sawStale {
		t.Error("control: RYW_MODE=off never read the stale replica1")
	}
}

func TestLSNModeRefusesAMalformedToken(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn"))
	for _, via := range []string{"header", "cookie"} {
		for _, tok := range []string{"yesterday", "1/2/3", "123456789/0", "-1/0"} {
			r := getWith(t, api, uuid.New(), tok, via)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"code":"invalid_token"`) {
				t.Errorf("token %q in the %s = %s; want 400 invalid_token", tok, via, r)
			}
		}
	}
}

// TestLSNModeSurvivesAReplicaCrashUnderLoad kills replica1 the way a crash
// would while users write and read, then restarts it. Every read must show
// the reader's last acknowledged write, and nothing may answer 5xx: reads
// in flight on the crashed replica are retried on another node.
func TestLSNModeSurvivesAReplicaCrashUnderLoad(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn"))
	waitReplicasUsable(t, api)
	r1 := stack.Replicas[0]

	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu       sync.Mutex
		problems []string
		reads    atomic.Int64
		byNode   sync.Map
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			user := uuid.New()
			for v := 0; ctx.Err() == nil; v++ {
				name := fmt.Sprintf("w%d-v%d", w, v)
				if st := loadRequest(client, http.MethodPost, api+"/api/me/profile", user, `{"email":"u@example.com","name":"`+name+`"}`); st.status != http.StatusOK {
					report("write %s: %d %s", name, st.status, st.body)
					continue
				}
				st := loadRequest(client, http.MethodGet, api+"/api/me", user, "")
				reads.Add(1)
				n, _ := byNode.LoadOrStore(st.servedBy, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				switch {
				case st.status != http.StatusOK:
					report("read after %s: %d %s (%s)", name, st.status, st.body, st.servedBy)
				case !strings.Contains(st.body, `"name":"`+name+`"`):
					report("stale read after %s from %s (%s): %s", name, st.servedBy, st.reason, st.body)
				}
				if p := loadRequest(client, http.MethodGet, api+"/api/products", uuid.Nil, ""); p.status != http.StatusOK {
					report("products: %d %s", p.status, p.body)
				}
			}
		})
	}
	// Let the load reach replica1, crash it, let the load run against the
	// survivors, restart it and let the load reach it again.
	waitFor(t, func() bool { n, ok := byNode.Load("replica1"); return ok && n.(*atomic.Int64).Load() > 20 })
	r1.KillForTest(t)
	before := reads.Load()
	waitFor(t, func() bool { return reads.Load() > before+100 })
	if err := r1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	n, _ := byNode.Load("replica1")
	servedBefore := n.(*atomic.Int64).Load()
	waitFor(t, func() bool { return n.(*atomic.Int64).Load() > servedBefore+20 })
	cancel()
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d write-then-read rounds", reads.Load())
}

type loadResult struct {
	status           int
	servedBy, reason string
	body             string
}

// loadRequest is a request from a load goroutine: it reports instead of
// failing the test.
func loadRequest(c *http.Client, method, url string, user uuid.UUID, body string) loadResult {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return loadResult{status: -1, body: err.Error()}
	}
	if user != uuid.Nil {
		if err := identify(req, user); err != nil {
			return loadResult{status: -1, body: err.Error()}
		}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return loadResult{status: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return loadResult{status: -1, body: err.Error()}
	}
	return loadResult{resp.StatusCode, resp.Header.Get("X-Served-By"), resp.Header.Get("X-Routing-Reason"), string(b)}
}

func TestReadinessShowsTheMonitorAndCounters(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn", "READYZ_DETAILS=true"))
	waitReplicasUsable(t, api)
	stack.PauseReplayForTest(t, stack.Replicas[0])
	user := uuid.New()
	post(t, api, user, "x")
	getMe(t, api, user)
	waitFor(t, func() bool {
		_, r := readyz(t, api)
		rep := r.Replicas[0].Replication
		return rep != nil && rep.Healthy && rep.LagBytes > 0 && rep.LagSeconds > 0 && rep.ReplayLSN > 0
	})
	_, r := readyz(t, api)
	if r.Routing == nil || r.Routing.ByReason["write"] == 0 || r.Routing.ByNode["primary"] == 0 {
		t.Errorf("/readyz routing counters = %+v", r.Routing)
	}
	if rep := r.Replicas[1].Replication; rep == nil || rep.LagBytes != 0 || rep.LagSeconds != 0 {
		t.Errorf("caught-up replica2 in /readyz = %+v; want no lag", rep)
	}
}
