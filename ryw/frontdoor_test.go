package ryw_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/ryw"
)

// frontDoor is a small service on the balancer, as an adopter writes it:
// plain GORM and database/sql calls, no ryw call in the handlers.
type frontDoor struct {
	rw    *ryw.Balancer
	table string
	srv   *httptest.Server
}

func newFrontDoor(t *testing.T, cfg ryw.Config) *frontDoor {
	t.Helper()
	cfg.GORM = &gorm.Config{Logger: logger.Discard}
	rw, err := ryw.New(t.Context(), onStack(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Close() })
	f := &frontDoor{rw: rw, table: newTable(t)}
	db, sqlDB := rw.GORM(), rw.SQL()
	mux := http.NewServeMux()
	// Writes: an upsert through GORM's Exec, or, with ?sleep, one that
	// outlasts the primary's timeout.
	mux.HandleFunc("POST /{k}", func(w http.ResponseWriter, r *http.Request) {
		v, _ := io.ReadAll(r.Body)
		q := "INSERT INTO " + f.table + " (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
		if r.URL.Query().Has("sleep") {
			q = "INSERT INTO " + f.table + " (k, v) SELECT ?, ? FROM pg_sleep(2)"
		}
		if err := db.WithContext(r.Context()).Exec(q, r.PathValue("k"), string(v)).Error; err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	// Reads: GORM's query callback (Take), its row callback (Raw.Scan),
	// and database/sql (QueryRowContext).
	mux.HandleFunc("GET /{k}", func(w http.ResponseWriter, r *http.Request) {
		var v string
		var err error
		switch r.URL.Query().Get("via") {
		case "raw":
			err = db.WithContext(r.Context()).Raw("SELECT v FROM "+f.table+" WHERE k = ?", r.PathValue("k")).Scan(&v).Error
		case "sql":
			err = sqlDB.QueryRowContext(r.Context(), "SELECT v FROM "+f.table+" WHERE k = $1", r.PathValue("k")).Scan(&v)
		case "raw-insert":
			// The same through GORM's Raw(...).Scan.
			err = db.WithContext(r.Context()).Raw("INSERT INTO "+f.table+" (k, v) VALUES (?, 'from a read') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v RETURNING v", r.PathValue("k")).Scan(&v).Error
		case "checked":
			// What the replay check left in the read's transaction: set
			// only behind a pooler, where the check runs in it.
			err = sqlDB.QueryRowContext(r.Context(), "SELECT coalesce(current_setting('ryw.checked', true), '') || '|' || pg_is_in_recovery()").Scan(&v)
		case "prepared":
			// A prepared statement: on a pooled connection, sent unnamed.
			var st *sql.Stmt
			if st, err = sqlDB.PrepareContext(r.Context(), "SELECT v FROM "+f.table+" WHERE k = $1"); err == nil {
				err = st.QueryRowContext(r.Context(), r.PathValue("k")).Scan(&v)
				st.Close()
			}
		case "tx-read":
			// A transaction of reads is no write.
			err = db.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
				return tx.Raw("SELECT v FROM "+f.table+" WHERE k = ?", r.PathValue("k")).Scan(&v).Error
			})
		case "sql-insert":
			// A write in a read: sent to a replica, refused there, run
			// on the primary, and recorded.
			err = sqlDB.QueryRowContext(r.Context(), "INSERT INTO "+f.table+" (k, v) VALUES ($1, 'from a read') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v RETURNING v", r.PathValue("k")).Scan(&v)
		default:
			var row struct{ V string }
			err = db.WithContext(r.Context()).Table(f.table).Select("v").Where("k = ?", r.PathValue("k")).Take(&row).Error
			v = row.V
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, v)
	})
	handler := rw.Middleware(ryw.HTTPOptions{
		User: func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
		Access: func(r *http.Request) ryw.Access {
			if r.URL.Query().Has("unchecked") {
				return ryw.UncheckedRead
			}
			return ryw.DefaultAccess(r)
		},
	})(mux)
	f.srv = httptest.NewServer(handler)
	t.Cleanup(f.srv.Close)
	return f
}

type answer struct {
	status             int
	body, node, reason string
}

func (f *frontDoor) do(t *testing.T, method, path, user, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-User", user)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header.Get(ryw.ServedByHeader), resp.Header.Get(ryw.ReasonHeader)}
}

// waitHealthy polls until the balancer has every replica in rotation.
func waitHealthy(t *testing.T, rw *ryw.Balancer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		healthy := 0
		for _, st := range rw.Status() {
			if st.Healthy {
				healthy++
			}
		}
		if healthy == len(stack.Replicas) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replicas not healthy: %+v", rw.Status())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestFrontDoorReadsYourWrites: with every replica paused, a user's write
// is read back fresh through each kind of read, with no ryw call in the
// handlers; the same read unchecked (as ModeOff routes it) is stale, which
// shows the test can fail; once the replicas catch up, replicas serve it.
func TestFrontDoorReadsYourWrites(t *testing.T) {
	needStack(t)
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN})
	if a := f.do(t, "POST", "/k1", "u1", "v1"); a.status != 200 || a.node != ryw.Primary || a.reason != "write" {
		t.Fatalf("first write: %+v", a)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, f.rw)
	stack.PauseReplayForTest(t, stack.Replicas...)
	if a := f.do(t, "POST", "/k1", "u1", "v2"); a.status != 200 {
		t.Fatalf("second write: %+v", a)
	}
	for _, via := range []string{"take", "raw", "sql"} {
		a := f.do(t, "GET", "/k1?via="+via, "u1", "")
		if a.status != 200 || a.body != "v2" || a.node != ryw.Primary {
			t.Errorf("own read via %s with the replicas paused: %+v, want v2 from the primary", via, a)
		}
		// The control: the same read, unchecked, is served stale.
		c := f.do(t, "GET", "/k1?unchecked&via="+via, "u1", "")
		if c.status != 200 || c.body != "v1" || c.node == ryw.Primary || c.reason != "ryw-off" {
			t.Errorf("control via %s: %+v, want the stale v1 from a replica", via, c)
		}
	}
	for _, r := range stack.Replicas {
		if err := r.ResumeReplay(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	// The replicas have the write: they serve the user again (polling:
	// the monitor learns their positions on its own schedule).
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := f.do(t, "GET", "/k1", "u1", "")
		if a.body != "v2" {
			t.Fatalf("own read after catch-up: %+v", a)
		}
		if a.node != ryw.Primary {
			if a.reason != "lsn-caught-up" {
				t.Errorf("own read from %s: reason %q", a.node, a.reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica served the caught-up read: %+v", a)
		}
		time.Sleep(20 * time.Millisecond) // polling the monitor's view, not waiting for correctness
	}
}

// TestFrontDoorAWriteInAReadRunsOnThePrimaryAndIsRecorded: an INSERT ...
// RETURNING in a GET is refused by the replica, runs on the primary, and
// is recorded for the user like any write.
func TestFrontDoorAWriteInAReadRunsOnThePrimaryAndIsRecorded(t *testing.T) {
	needStack(t)
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN})
	waitHealthy(t, f.rw)
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(strings.TrimSuffix(stack.Redis.URL, "/0"), "redis://")})
	defer rc.Close()
	for i, via := range []string{"sql-insert", "raw-insert"} {
		user := fmt.Sprintf("u3-%d", i)
		before, _ := rc.Exists(t.Context(), ryw.TokenKey(user)).Result()
		a := f.do(t, "GET", "/k3?via="+via, user, "")
		// database/sql sends it to the replica, which refuses it; GORM's
		// resolver sends a raw statement that is not a SELECT to the
		// primary at once.
		if a.status != 200 || a.body != "from a read" || a.node != ryw.Primary || (via == "sql-insert" && a.reason != "replica-failed") {
			t.Fatalf("a write in a read via %s: %+v, want it run on the primary", via, a)
		}
		after, err := rc.Exists(t.Context(), ryw.TokenKey(user)).Result()
		if err != nil || before != 0 || after != 1 {
			t.Errorf("via %s, the user's mark: %d before, %d after (%v); want it recorded", via, before, after, err)
		}
	}
	// The control: a transaction that only reads records nothing.
	if a := f.do(t, "GET", "/k3?via=tx-read", "u3-tx", ""); a.status != 200 || a.body != "from a read" {
		t.Fatalf("a transaction of reads: %+v", a)
	}
	if n, err := rc.Exists(t.Context(), ryw.TokenKey("u3-tx")).Result(); err != nil || n != 0 {
		t.Errorf("a transaction of reads left a mark (%d, %v); want none", n, err)
	}
}

// TestFrontDoorAWriteOfUnknownOutcomeIsUnconfirmed: a write that outlasts
// the primary's timeout may or may not have committed: the client is told
// (503 write_unconfirmed, not the handler's 500), and the write is
// recorded as if it had. Control: a write that fails cleanly is answered
// as the handler says, and records nothing.
func TestFrontDoorAWriteOfUnknownOutcomeIsUnconfirmed(t *testing.T) {
	needStack(t)
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN, PrimaryTimeout: 300 * time.Millisecond})
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(strings.TrimSuffix(stack.Redis.URL, "/0"), "redis://")})
	defer rc.Close()

	a := f.do(t, "POST", "/k4?sleep", "u4", "v")
	if a.status != 503 || !strings.Contains(a.body, "write_unconfirmed") || a.reason != "write" {
		t.Errorf("a write that timed out: %+v, want 503 write_unconfirmed", a)
	}
	if n, err := rc.Exists(t.Context(), ryw.TokenKey("u4")).Result(); err != nil || n != 1 {
		t.Errorf("the user's mark after a write of unknown outcome: %d (%v), want it recorded", n, err)
	}

	// The control: a value the column refuses (NUL) fails on the server.
	c := f.do(t, "POST", "/k5", "u5", "bad\x00value")
	if c.status != 500 || strings.Contains(c.body, "write_unconfirmed") {
		t.Errorf("a write the server refused: %+v, want the handler's 500", c)
	}
	if n, err := rc.Exists(t.Context(), ryw.TokenKey("u5")).Result(); err != nil || n != 0 {
		t.Errorf("the user's mark after a refused write: %d (%v), want none", n, err)
	}
}
