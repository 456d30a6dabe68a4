package ryw_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/ryw"
)

// Holes 4 to 7 of the fault suite (docs/CONSISTENCY.md), tested where the
// pool, the WAL position, the clocks and the marks can be reached directly.
// Holes 1 to 3 are tested over HTTP in cmd/api (faults_test.go); hole 7 is
// TestMarksOnlyRise.

// Hole 4: database/sql opens connections for waiting requests in a
// background goroutine, without any request's context, and hands a new
// connection to a waiter without resetting it. Reads that get such a
// connection must still be checked against their MinLSN.
func TestFaultConnectionsOpenedInTheBackgroundAreChecked(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	r := stack.Replicas[0]
	table := newTable(t)
	if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ('k', 'v1')"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, r); err != nil {
		t.Fatal(err)
	}
	stack.PauseReplayForTest(t, r)
	if err := stack.Primary.Exec(ctx, "UPDATE "+table+" SET v = 'v2'"); err != nil {
		t.Fatal(err)
	}
	need, err := ryw.PrimaryWAL{DB: openPool(t, stack.Primary.URL)}.CurrentLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, control := range []bool{false, true} {
		pool, err := ryw.OpenPool(r.URL, true, ryw.PoolOptions{MaxOpen: 1, MaxIdle: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		// The pool's one connection is busy.
		held, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := held.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		// Two reads that need v2 wait for it. The control's reads carry
		// no MinLSN: nothing to check, so they read what the replica has.
		min := need
		if control {
			min = 0
		}
		type result struct {
			v   string
			err error
		}
		results := make(chan result, 2)
		for range 2 {
			go func() {
				rctx := ryw.WithDecision(ctx, ryw.Decision{Node: r.Name, Reason: ryw.ReasonLSNCaughtUp, MinLSN: min})
				var v string
				err := pool.QueryRowContext(rctx, "SELECT v FROM "+table+" WHERE k = 'k'").Scan(&v)
				results <- result{v, err}
			}()
		}
		waitUntil(t, func() bool { return pool.Stats().WaitCount >= 2 })
		// The busy connection dies (a restart, an idle timeout): the pool
		// opens a replacement in the background and hands it over.
		if err := r.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		for held.PingContext(ctx) == nil {
		}
		held.Close()
		for range 2 {
			res := <-results
			var behind *ryw.BehindError
			switch {
			case control && res.v != "v1":
				t.Errorf("control: a read without MinLSN on the paused replica = %q, %v; want the stale v1", res.v, res.err)
			case !control && res.v == "v1":
				t.Errorf("a read that needs %s ran unchecked on a fresh connection and read the stale v1", need)
			case !control && !errors.As(res.err, &behind):
				t.Errorf("a read that needs %s on a paused replica = %q, %v; want BehindError", need, res.v, res.err)
			}
		}
	}
}

// Hole 5: with synchronous_commit = off (here for the whole server, set at
// run time), a commit returns before its WAL is written or flushed. The
// token read after it must still be at or past the commit record, or a
// replica at the token would not show the write. pg_walinspect finds each
// commit record's end. The control is the position the API used before
// (pg_current_wal_lsn): it falls short.
func TestFaultTokensHoldWithSynchronousCommitOff(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	p := stack.Primary
	for _, q := range []string{
		"CREATE EXTENSION IF NOT EXISTS pg_walinspect",
		"ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()",
	} {
		if err := p.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = p.Exec(ctx, "ALTER SYSTEM RESET synchronous_commit")
		_ = p.Exec(ctx, "SELECT pg_reload_conf()")
	})
	table := newTable(t)
	db := openPool(t, p.URL)
	waitUntil(t, func() bool {
		var s string
		return db.QueryRowContext(ctx, "SELECT current_setting('synchronous_commit')").Scan(&s) == nil && s == "off"
	})
	wal := ryw.PrimaryWAL{DB: db}
	start, err := wal.CurrentLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type write struct {
		xid            string
		token, control ryw.LSN
	}
	var writes []write
	for i := range 40 {
		var w write
		if err := db.QueryRowContext(ctx, "INSERT INTO "+table+" VALUES ($1, 'v') RETURNING xmin::text", fmt.Sprint(i)).Scan(&w.xid); err != nil {
			t.Fatal(err)
		}
		if w.token, err = wal.CurrentLSN(ctx); err != nil {
			t.Fatal(err)
		}
		var text string
		if err := db.QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
			t.Fatal(err)
		}
		w.control, _ = ryw.ParseLSN(text)
		writes = append(writes, w)
	}
	// A synchronous commit flushes everything before it, so the commit
	// records can be read.
	if err := p.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit = on; INSERT INTO "+table+" VALUES ('flush', 'v'); COMMIT"); err != nil {
		t.Fatal(err)
	}
	ends := commitEnds(t, db, start)
	short, controlShort := 0, 0
	for _, w := range writes {
		end, ok := ends[w.xid]
		if !ok {
			t.Fatalf("no commit record found for xid %s", w.xid)
		}
		if w.token < end {
			short++
		}
		if w.control < end {
			controlShort++
		}
	}
	if short > 0 {
		t.Errorf("%d of %d tokens fell below their commit record", short, len(writes))
	}
	if controlShort == 0 {
		t.Error("control: pg_current_wal_lsn() was never short of a commit with synchronous_commit = off")
	}
	t.Logf("below their commit record: tokens %d of %d, control %d of %d", short, len(writes), controlShort, len(writes))
}

// commitEnds returns the end of each commit record since start, by xid.
func commitEnds(t *testing.T, db *sql.DB, start ryw.LSN) map[string]ryw.LSN {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `
		SELECT xid::text, end_lsn::text FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_flush_lsn())
		WHERE resource_manager = 'Transaction' AND record_type LIKE 'COMMIT%'`, start.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ends := map[string]ryw.LSN{}
	for rows.Next() {
		var xid, end string
		if err := rows.Scan(&xid, &end); err != nil {
			t.Fatal(err)
		}
		ends[xid], _ = ryw.ParseLSN(end)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ends
}

// Hole 6: two instances whose clocks disagree (the writer's 6 s behind)
// share Redis. Right after the user's write, the other instance must not
// send the user's read to a replica that lacks it: no clock of an instance
// decides what a user has written.
func TestFaultClockSkewBetweenInstances(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	primary := openPool(t, stack.Primary.URL)
	db, err := ryw.Open(primary, replicaPools(t), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var monReplicas []ryw.NodeDB
	for _, r := range stack.Replicas {
		monReplicas = append(monReplicas, ryw.NodeDB{Name: r.Name, DB: openPool(t, r.URL)})
	}
	monitor := ryw.NewMonitor(openPool(t, stack.Primary.URL), monReplicas, 20*time.Millisecond, quiet())
	mctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { monitor.Run(mctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	tracker, _ := newTracker(t, 10*time.Minute)
	wal := ryw.PrimaryWAL{DB: primary}
	router := func(mode ryw.Mode, skew time.Duration) *ryw.Router {
		return ryw.NewRouter(ryw.RouterConfig{
			Mode: mode, Window: 5 * time.Second, MarkerTTL: 10 * time.Minute, Tracker: tracker, View: monitor, WAL: wal,
			Logger: quiet(), Now: func() time.Time { return time.Now().Add(skew) },
		})
	}
	table := newTable(t)
	read := ownReader(t, db, table)

	for _, mode := range []ryw.Mode{ryw.ModeTime, ryw.ModeLSN, ryw.ModeOff} {
		t.Run(string(mode), func(t *testing.T) {
			writer, reader := router(mode, -6*time.Second), router(mode, 0)
			user := fmt.Sprintf("user-%d", seq.Add(1))
			if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, 'v1')", user); err != nil {
				t.Fatal(err)
			}
			if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, func() bool { v, d := read(reader, user); return v == "v1" && !d.OnPrimary() })
			stack.PauseReplayForTest(t, stack.Replicas...)
			if err := stack.Primary.Exec(ctx, "UPDATE "+table+" SET v = 'v2' WHERE k = $1", user); err != nil {
				t.Fatal(err)
			}
			if err := writer.RecordWrite(ctx, user); err != nil {
				t.Fatal(err)
			}
			v, d := read(reader, user)
			switch {
			case mode == ryw.ModeOff && v != "v1":
				t.Errorf("control: RYW off read %q from %+v; want the stale v1 from a paused replica", v, d)
			case mode != ryw.ModeOff && v != "v2":
				t.Errorf("read through the other instance = %q from %+v; want v2", v, d)
			}
		})
	}
}

// ownReader returns a reader of a user's value in table (newTable): an
// own-write read that r routes, run on db, with the decision it ran by.
func ownReader(t *testing.T, db *gorm.DB, table string) func(r *ryw.Router, user string) (string, ryw.Decision) {
	return func(r *ryw.Router, user string) (string, ryw.Decision) {
		ctx := t.Context()
		d := r.ForOwnRead(ctx, user)
		var v string
		err := r.Read(ryw.WithDecision(ctx, d), func(ctx context.Context) error {
			return db.WithContext(ctx).Raw("SELECT v FROM "+table+" WHERE k = ?", user).Scan(&v).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		return v, d
	}
}

// waitUntil polls cond until it holds, failing the test after 30 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Hole 2, eviction flavour: a Redis that may evict keys (maxmemory with an
// eviction policy) can drop a user's marks without a trace, so a user
// without marks is then unknown, and read from the primary. The tracker
// learns the policy on each new connection.
func TestFaultRedisThatMayEvictMarksIsNotTrustedForAbsence(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	admin := redisAdmin(t)
	for _, policy := range []string{"noeviction", "allkeys-lru"} {
		t.Run(policy, func(t *testing.T) {
			if err := admin.ConfigSet(ctx, "maxmemory", "1gb").Err(); err != nil {
				t.Fatal(err)
			}
			if err := admin.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				admin.ConfigSet(context.Background(), "maxmemory", "0")
				admin.ConfigSet(context.Background(), "maxmemory-policy", "noeviction")
			})
			tracker, _ := newTracker(t, time.Minute)
			m, err := tracker.Lookup(ctx, fmt.Sprintf("user-%d", seq.Add(1)), false)
			if err != nil {
				t.Fatal(err)
			}
			if want := policy != "noeviction"; m.Unreliable != want {
				t.Errorf("maxmemory 1gb, policy %s: Unreliable = %v, want %v", policy, m.Unreliable, want)
			}
		})
	}
}

// TestAReplicaRejoinsWithItsPoolOpen: a replica back after a crash rejoins
// the rotation only once its read pool has connections to the new server,
// as many as the pool allows: the first reads it is sent find them open,
// rather than each opening one while the fresh server is slow to start
// backends (under load they overran the replica timeout and went to the
// primary, replica-busy, about a second each), and none finds a
// connection to the old server. Control: without it, the replica rejoins
// with none open.
func TestAReplicaRejoinsWithItsPoolOpen(t *testing.T) {
	needStack(t)
	const maxConns = 4
	r := stack.Replicas[1]
	for _, warmed := range []bool{true, false} {
		t.Run(fmt.Sprintf("warm=%v", warmed), func(t *testing.T) {
			ctx := t.Context()
			rw, err := ryw.New(ctx, onStack(ryw.Config{Mode: ryw.ModeLSN, MaxConns: maxConns, PollInterval: 20 * time.Millisecond}))
			if err != nil {
				t.Fatal(err)
			}
			defer rw.Close()
			if !warmed {
				ryw.NoWarmOnRejoin(rw)
			}
			healthy := func() bool {
				for _, st := range rw.Status() {
					if st.Name == r.Name {
						return st.Healthy
					}
				}
				return false
			}
			r.KillForTest(t)
			waitUntil(t, func() bool { return !healthy() })
			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, healthy)
			// The new server's client backends, the monitor's own among
			// them, as the replica rejoins.
			db := openPool(t, r.URL)
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if warmed && n < maxConns {
				t.Errorf("%s rejoined with %d connections open; want its pool's %d", r.Name, n, maxConns)
			}
			if !warmed && n >= maxConns {
				t.Errorf("control: %s rejoined with %d connections open without opening its pool", r.Name, n)
			}
		})
	}
}
