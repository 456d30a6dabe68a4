package ryw_test

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// The package's cluster: a primary, two replicas, Redis. Nil under -short.
var stack *devstack.Stack

// TestMain starts the cluster, except under -short, which runs only the tests
// that need no server: the others call needStack and skip.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	// RYW_TEST_POOLER=transaction|session puts a PgBouncer in front of
	// every node: make test runs the front door's tests so.
	os.Exit(devstack.RunTests(m, devstack.Options{Replicas: 2, Migrate: true, Pooler: os.Getenv("RYW_TEST_POOLER")}, &stack))
}

// needStack skips a test that needs real nodes when TestMain started none.
func needStack(t testing.TB) {
	t.Helper()
	if stack == nil {
		t.Skip("needs PostgreSQL and Redis (devstack); run without -short")
	}
}

func openPool(t testing.TB, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func replicaPools(t *testing.T) []ryw.NodeDB {
	var out []ryw.NodeDB
	for _, r := range stack.Replicas {
		out = append(out, ryw.NodeDB{Name: r.Name, DB: openPool(t, r.URL)})
	}
	return out
}

var seq atomic.Int64

// newTable creates a one-row-per-key table on the primary and waits until
// every replica has it.
func newTable(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t_%d", seq.Add(1))
	if err := stack.Primary.Exec(t.Context(), "CREATE TABLE "+name+" (k text PRIMARY KEY, v text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	return name
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestPluginRoutesAndObservesTruthfully writes a row that only the primary
// has (replica1 paused), then reads it through GORM under each decision:
// what was read must match the node the observation names.
func TestPluginRoutesAndObservesTruthfully(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	table := newTable(t)
	db, err := ryw.Open(openPool(t, stack.Primary.URL), replicaPools(t), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	stack.PauseReplayForTest(t, stack.Replicas[0])
	wctx, wobs := ryw.WithObservation(ryw.WithDecision(ctx, ryw.Decision{Node: ryw.Primary, Reason: ryw.ReasonWrite}))
	if err := db.WithContext(wctx).Exec("INSERT INTO " + table + " VALUES ('k', 'only on the primary and replica2')").Error; err != nil {
		t.Fatal(err)
	}
	if wobs.ServedBy() != ryw.Primary {
		t.Errorf("the write was observed on %q", wobs.ServedBy())
	}
	if err := stack.WaitCaughtUp(ctx, stack.Replicas[1]); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		node string
		want int64 // rows visible
	}{{ryw.Primary, 1}, {"replica1", 0}, {"replica2", 1}} {
		for _, how := range []string{"model query", "raw select", "row"} {
			ctx, obs := ryw.WithObservation(ryw.WithDecision(ctx, ryw.Decision{Node: tt.node}))
			var n int64
			var err error
			q := db.WithContext(ctx)
			switch how {
			case "model query":
				err = q.Table(table).Where("k = ?", "k").Count(&n).Error
			case "raw select":
				err = q.Raw("SELECT count(*) FROM " + table + " WHERE k = 'k'").Scan(&n).Error
			case "row":
				err = q.Raw("SELECT count(*) FROM " + table + " WHERE k = 'k'").Row().Scan(&n)
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.want || obs.ServedBy() != tt.node {
				t.Errorf("%s routed to %s: saw %d rows, observed on %q; want %d rows on %s", how, tt.node, n, obs.ServedBy(), tt.want, tt.node)
			}
		}
	}

	// A transaction runs on the primary whatever the decision.
	ctx2, obs := ryw.WithObservation(ryw.WithDecision(ctx, ryw.Decision{Node: "replica1"}))
	var n int64
	err = db.WithContext(ctx2).Transaction(func(tx *gorm.DB) error {
		return tx.Table(table).Count(&n).Error
	})
	if err != nil || n != 1 || obs.ServedBy() != ryw.Primary {
		t.Errorf("transaction: %v, %d rows, observed on %q; want 1 row on the primary", err, n, obs.ServedBy())
	}
}

func TestReadRetriesOnThePrimaryWhenTheReplicaIsDown(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	r := stack.Replicas[1]
	db, err := ryw.Open(openPool(t, stack.Primary.URL), replicaPools(t), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	marked := &recordingReplicas{}
	router := ryw.NewRouter(ryw.RouterConfig{Mode: ryw.ModeTime, Window: time.Second, View: marked, Logger: quiet()})
	r.KillForTest(t)
	rctx, obs := ryw.WithObservation(ryw.WithDecision(ctx, ryw.Decision{Node: r.Name, Reason: ryw.ReasonStaleOK}))
	var products int64
	err = router.Read(rctx, func(ctx context.Context) error {
		return db.WithContext(ctx).Table("products").Count(&products).Error
	})
	if err != nil || products != 3 {
		t.Fatalf("Read with %s down = %v (%d products); want the primary's answer", r.Name, err, products)
	}
	if obs.ServedBy() != ryw.Primary || obs.Reason() != ryw.ReasonReplicaFailed || marked.down != r.Name {
		t.Errorf("served by %q for %q, marked down %q", obs.ServedBy(), obs.Reason(), marked.down)
	}
}

// recordingReplicas records what the router reports about replicas.
type recordingReplicas struct{ down string }

func (r *recordingReplicas) Cluster() ryw.Cluster { return ryw.Cluster{} }

func (r *recordingReplicas) PrimaryPosition() ryw.Position { return ryw.Position{} }

func (r *recordingReplicas) Saw(string, ryw.Position, time.Time) {}

func (r *recordingReplicas) CaughtUp(ryw.LSN) []string             { return nil }
func (r *recordingReplicas) AllCaughtUp(ryw.LSN) bool              { return false }
func (r *recordingReplicas) Fence() (ryw.LSN, time.Time)           { return 0, time.Time{} }
func (r *recordingReplicas) PrimaryLSN() ryw.LSN                   { return 0 }
func (r *recordingReplicas) RequiredLSN(time.Time) (ryw.LSN, bool) { return 0, false }
func (r *recordingReplicas) Refresh(context.Context, []string)     {}
func (r *recordingReplicas) Following() []string                   { return nil }
func (r *recordingReplicas) Behind(string, ryw.LSN)                {}
func (r *recordingReplicas) MarkDown(name string, _ error)         { r.down = name }

// onStack fills cfg with the stack's nodes (as clients reach them: through
// PgBouncer under RYW_TEST_POOLER), its Redis and a quiet logger.
func onStack(cfg ryw.Config) ryw.Config {
	cfg.Primary, cfg.Redis, cfg.Replicas = stack.ClientURL(stack.Primary), stack.Redis.URL, nil
	for _, r := range stack.Replicas {
		cfg.Replicas = append(cfg.Replicas, ryw.Replica{Name: r.Name, URL: stack.ClientURL(r)})
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	return cfg
}

// redisAdmin is a client of the stack's Redis as its default user, for a
// test to configure it (CONFIG SET, ACL SETUSER).
func redisAdmin(t testing.TB) redis.UniversalClient {
	t.Helper()
	admin, err := ryw.NewRedisClient(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return admin
}

func newTracker(t testing.TB, ttl time.Duration) (*ryw.RedisTracker, redis.UniversalClient) {
	t.Helper()
	return newTrackerWith(t, ryw.TrackerConfig{TTL: ttl})
}

// newTrackerWith is newTracker with cfg, its WAL and logger filled in.
func newTrackerWith(t testing.TB, cfg ryw.TrackerConfig) (*ryw.RedisTracker, redis.UniversalClient) {
	t.Helper()
	client, err := ryw.NewRedisClient(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	cfg.WAL, cfg.Logger = ryw.PrimaryWAL{DB: openPool(t, stack.Primary.URL)}, quiet()
	tr := ryw.NewRedisTracker(client, cfg)
	t.Cleanup(tr.Close)
	return tr, client
}

// tl1 is a position on timeline 1 of a cluster.
func tl1(l ryw.LSN) ryw.Position {
	return ryw.Position{System: "7302061513459013653", Timeline: 1, LSN: l}
}

func TestRedisTracker(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	tracker, client := newTracker(t, 10*time.Minute)
	user := fmt.Sprintf("user-%d", seq.Add(1))

	if m, err := tracker.Lookup(ctx, user, true); m.HasWrite() || err != nil {
		t.Fatalf("Lookup of a user who never wrote = %+v, %v", m, err)
	}
	before := time.Now()
	if prev, err := tracker.Record(ctx, user, tl1(0x1_0000ABCD)); err != nil || !prev.IsZero() {
		t.Fatalf("Record = %+v, %v; want no previous mark", prev, err)
	}
	raw, err := client.Get(ctx, "user:"+user+":last_write_utc").Result()
	if err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339, raw)
	if err != nil || !strings.HasSuffix(raw, "Z") || len(raw) != len("2026-11-26T09:00:00.123456Z") {
		t.Errorf("marker = %q (%v), want a fixed-width RFC 3339 UTC time", raw, err)
	}
	// Redis runs on this machine: its clock is ours.
	if d := at.Sub(before); d < -time.Second || d > 5*time.Second {
		t.Errorf("marker %s is %s away from the time of the write", raw, d)
	}
	if tok := client.Get(ctx, "user:"+user+":last_write_lsn").Val(); tok != "7302061513459013653:00000001000000010000ABCD" {
		t.Errorf("token key = %q, want <system>:<8 hex timeline><16 hex LSN>", tok)
	}
	for _, key := range []string{ryw.MarkerKey(user), ryw.TokenKey(user)} {
		ttl, err := client.TTL(ctx, key).Result()
		if err != nil || ttl <= 9*time.Minute || ttl > 10*time.Minute {
			t.Errorf("%s TTL = %v, %v; want 10m", key, ttl, err)
		}
	}
	m, err := tracker.Lookup(ctx, user, true)
	if err != nil || m.Token != tl1(0x1_0000ABCD) || !m.WrittenAt.Equal(at) || m.Age < 0 || m.Age > 5*time.Second {
		t.Errorf("Lookup = %+v, %v; want the token and the time just recorded", m, err)
	}

	if err := client.Set(ctx, ryw.MarkerKey("garbled"), "yesterday", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := tracker.Lookup(ctx, "garbled", true); err == nil {
		t.Error("a marker that is not a time was taken as valid")
	}

	// Redis down: calls fail within the tracker's timeout, not the
	// caller's longer deadline.
	stack.Redis.StopForTest(t)
	long, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := tracker.Lookup(long, user, true); err == nil {
		t.Error("Lookup succeeded with Redis stopped")
	}
	if _, err := tracker.Record(long, user, tl1(1)); err == nil {
		t.Error("Record succeeded with Redis stopped")
	}
	if long.Err() != nil {
		t.Error("a tracker call waited for the caller's deadline")
	}
}

// Lookups made at the same time share pipelines, and each still gets its
// own user's marks, and only those it asked for, including users with none
// and a user whose mark is garbled (an error for that user alone).
func TestConcurrentLookupsSharePipelinesAndKeepTheirOwnMarks(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	tracker, client := newTracker(t, 10*time.Minute)
	const users = 300
	prefix := fmt.Sprintf("batch-%d-", seq.Add(1))
	for i := range users {
		if i%3 == 0 {
			continue // never wrote
		}
		if _, err := tracker.Record(ctx, fmt.Sprint(prefix, i), tl1(ryw.LSN(0x1_0000_0000+i))); err != nil {
			t.Fatal(err)
		}
	}
	garbled := prefix + "garbled"
	if err := client.Set(ctx, ryw.TokenKey(garbled), "not hex", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := tracker.LookupPipelines()
	var wg sync.WaitGroup
	errs := make(chan error, users+1)
	start := make(chan struct{})
	for i := range users {
		wg.Go(func() {
			<-start
			// Lookups with and without the time mark share pipelines.
			withTime := i%2 == 0
			m, err := tracker.Lookup(ctx, fmt.Sprint(prefix, i), withTime)
			want := ryw.LSN(0x1_0000_0000 + i)
			if i%3 == 0 {
				want = 0
			}
			if err != nil || m.Token.LSN != want || m.HasWrite() != (want != 0) || m.WrittenAt.IsZero() != (want == 0 || !withTime) {
				errs <- fmt.Errorf("user %d: Lookup(withTime %v) = %+v, %v; want token %s", i, withTime, m, err, want)
			}
		})
	}
	wg.Go(func() {
		<-start
		if _, err := tracker.Lookup(ctx, garbled, true); err == nil {
			errs <- errors.New("a garbled token was taken as valid")
		}
	})
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	batches := tracker.LookupPipelines() - before
	if batches < 1 || batches >= users {
		t.Errorf("%d lookups made at once went out in %d pipelines; want them to share", users+1, batches)
	}
	t.Logf("%d lookups, %d pipelines", users+1, batches)
}

func TestNewRedisClientKinds(t *testing.T) {
	for url, want := range map[string]string{
		"redis://127.0.0.1:6379/0":                           "*redis.Client",
		"redis://:pw@127.0.0.1:26379/0?master_name=mymaster": "*redis.Client", // a failover client is a *redis.Client
		"redis://127.0.0.1:7000?addr=127.0.0.1:7001":         "*redis.ClusterClient",
		"redis://127.0.0.1:7000?cluster=true":                "*redis.ClusterClient",
		"rediss://127.0.0.1:6380/1?dial_timeout=1s":          "*redis.Client",
	} {
		c, err := ryw.NewRedisClient(url)
		if err != nil {
			t.Errorf("NewRedisClient(%q): %v", url, err)
			continue
		}
		if got := fmt.Sprintf("%T", c); got != want {
			t.Errorf("NewRedisClient(%q) is a %s, want %s", url, got, want)
		}
		c.Close()
	}
	for _, url := range []string{"http://h:6379", "redis://h:6379/x", "redis://h:6379?bogus=1"} {
		if c, err := ryw.NewRedisClient(url); err == nil {
			c.Close()
			t.Errorf("NewRedisClient(%q) accepted a bad URL", url)
		}
	}
}

func TestMonitorSeesLagAndFreshness(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	table := newTable(t)
	m := ryw.NewMonitor(openPool(t, stack.Primary.URL), replicaPools(t), 10*time.Millisecond, quiet())
	// The primary's insert position may run a record ahead of what it has
	// flushed (and so sent) for up to wal_writer_delay: poll until the
	// replicas are seen caught up, as an idle, caught-up replica must be.
	waitUntil(t, func() bool {
		m.Poll(ctx)
		for _, st := range m.Status() {
			if !st.Healthy || st.LagBytes != 0 || st.Lag != 0 {
				return false
			}
		}
		return true
	})

	r1 := stack.Replicas[0]
	stack.PauseReplayForTest(t, r1)
	before := time.Now()
	if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ('a', 'b')"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, stack.Replicas[1]); err != nil {
		t.Fatal(err)
	}
	// As above, the insert position may run a record past what replica2
	// has been sent yet: poll until replica2 is seen past the write.
	var fresh []string
	var need ryw.LSN
	waitUntil(t, func() bool {
		m.Poll(ctx)
		var ok bool
		if need, ok = m.RequiredLSN(before); !ok {
			t.Fatal("RequiredLSN(a moment ago) unknown")
		}
		fresh = m.CaughtUp(need)
		return slices.Contains(fresh, "replica2")
	})
	if strings.Join(fresh, ",") != "replica2" {
		t.Errorf("replicas with every commit before the write = %v; want only replica2, replica1 is paused before it", fresh)
	}
	st := m.Status()[0]
	if !st.Healthy || st.LagBytes == 0 || st.Lag <= 0 {
		t.Errorf("paused replica1 behind a write: %+v; want healthy with lag", st)
	}
	if all := m.CaughtUp(0); len(all) != 2 {
		t.Errorf("CaughtUp(0) = %v; a lagging replica is still healthy", all)
	}
	// Paused behind the primary, replica1 stops moving: it is stalled, and
	// a Refresh no longer asks it. replica2, caught up, is not.
	waitUntil(t, func() bool { m.Poll(ctx); return ryw.Stalled(m, "replica1") })
	if ryw.Stalled(m, "replica2") {
		t.Error("replica2, caught up, taken for stalled")
	}

	if err := r1.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, r1); err != nil {
		t.Fatal(err)
	}
	m.Poll(ctx)
	if st := m.Status()[0]; st.LagBytes != 0 || st.Lag != 0 || ryw.Stalled(m, "replica1") {
		t.Errorf("replica1 after catching up: %+v, stalled %v; want no lag, not stalled", st, ryw.Stalled(m, "replica1"))
	}
	if fresh := m.CaughtUp(need); len(fresh) != 2 {
		t.Errorf("CaughtUp after catch-up = %v, want both", fresh)
	}
}

func TestMonitorTakesADownReplicaOutUntilItAnswers(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	m := ryw.NewMonitor(openPool(t, stack.Primary.URL), replicaPools(t), 10*time.Millisecond, quiet())
	r2 := stack.Replicas[1]
	r2.StopForTest(t)
	m.Poll(ctx)
	if st := m.Status()[1]; st.Healthy || st.Error == "" {
		t.Errorf("stopped replica2: %+v", st)
	}
	if fresh := m.CaughtUp(0); strings.Join(fresh, ",") != "replica1" {
		t.Errorf("CaughtUp = %v with replica2 down", fresh)
	}
	m.MarkDown("replica1", errors.New("query failed"))
	if fresh := m.CaughtUp(0); len(fresh) != 0 {
		t.Errorf("CaughtUp = %v after replica1 was marked down", fresh)
	}
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, r2); err != nil {
		t.Fatal(err)
	}
	// Polled until both are back: the first poll after a restart may
	// still find a pooled connection of the old server, which fails.
	waitUntil(t, func() bool {
		m.Poll(ctx)
		return len(m.CaughtUp(0)) == 2
	})
	if st := m.Status()[1]; !st.Healthy {
		t.Errorf("replica2 answers again but is not healthy: %+v", st)
	}
}

// TestReplicaPoolChecksTheReplayPositionOnEachConnection: a read whose
// decision needs a position the replica has not replayed fails with
// BehindError before its query runs, on fresh and on reused connections.
func TestReplicaPoolChecksTheReplayPositionOnEachConnection(t *testing.T) {
	needStack(t)
	query, replayed, ahead := pausedReplicaPool(t, 2)
	for i := range 3 { // the first connection is new, the next ones reused
		if err := query(replayed); err != nil {
			t.Fatalf("round %d: a read the replica can serve failed: %v", i, err)
		}
		var behind *ryw.BehindError
		err := query(ahead)
		if !errors.As(err, &behind) || behind.Need != ahead || behind.Replayed != replayed {
			t.Fatalf("round %d: a read needing %s on a replica at %s = %v; want BehindError", i, ahead, replayed, err)
		}
	}
	// Without a MinLSN there is nothing to check.
	if err := query(0); err != nil {
		t.Fatal(err)
	}
}

// pausedReplicaPool pauses replica1's replay, makes the primary write past
// it, and returns a read through a checking pool of maxOpen connections to
// replica1 that needs min, with where replica1 stopped and where the
// primary is.
func pausedReplicaPool(t *testing.T, maxOpen int) (query func(min ryw.LSN) error, replayed, ahead ryw.LSN) {
	t.Helper()
	pool, name, replayed, ahead := pausedReplica(t, maxOpen)
	return func(min ryw.LSN) error {
		var one int
		return pool.QueryRowContext(needing(t.Context(), name, min), "SELECT 1").Scan(&one)
	}, replayed, ahead
}

// needing is ctx with the decision to read from replica node, which must
// have replayed min (none: 0).
func needing(ctx context.Context, node string, min ryw.LSN) context.Context {
	if min == 0 {
		return ctx
	}
	return ryw.WithDecision(ctx, ryw.Decision{Node: node, MinLSN: min})
}

// pausedReplica is pausedReplicaPool's pool itself, with replica1's name.
func pausedReplica(t *testing.T, maxOpen int) (pool *sql.DB, name string, replayed, ahead ryw.LSN) {
	t.Helper()
	ctx := t.Context()
	r := stack.Replicas[0]
	pool, err := ryw.OpenPool(r.URL, true, ryw.PoolOptions{MaxOpen: maxOpen, MaxIdle: maxOpen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	stack.PauseReplayForTest(t, r)
	if replayed, err = r.ReplayLSN(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.Primary.Exec(ctx, "CREATE TABLE "+fmt.Sprintf("t_%d", seq.Add(1))+" (k int)"); err != nil {
		t.Fatal(err)
	}
	if ahead, err = stack.Primary.CurrentLSN(ctx); err != nil {
		t.Fatal(err)
	}
	return pool, r.Name, replayed, ahead
}

// TestAHopefulReadWaitsBrieflyOnItsReplica: a read sent hopefully to a
// replica (one that keeps up, not known to have what the read needs) gives
// the replica a few milliseconds to replay it, on the replica, in the
// read's own round trip: a replica that resumes replay meanwhile serves
// the read. Control: a read that is not hopeful is refused at once, with
// the replica just as far behind.
func TestAHopefulReadWaitsBrieflyOnItsReplica(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	pool, name, replayed, ahead := pausedReplica(t, 1)
	var behind *ryw.BehindError
	var v int
	err := pool.QueryRowContext(ryw.WithDecision(ctx, ryw.Decision{Node: name, MinLSN: ahead}), "SELECT 1").Scan(&v)
	if !errors.As(err, &behind) || behind.Replayed != replayed {
		t.Fatalf("control: a read needing %s on the paused replica = %v; want BehindError at %s", ahead, err, replayed)
	}
	// Paused throughout, a hopeful read is refused too, after its wait.
	if err := pool.QueryRowContext(ryw.WithDecision(ctx, ryw.HopefulDecision(name, ahead)), "SELECT 1").Scan(&v); !errors.As(err, &behind) {
		t.Fatalf("a hopeful read on a replica paused throughout = %v; want BehindError", err)
	}
	// Now replay resumes while a hopeful read waits on the replica (given
	// long enough that the test surely resumes it in time).
	ryw.SetHopefulWait(t, time.Minute)
	r := stack.Replicas[0]
	done := make(chan error, 1)
	go func() {
		done <- pool.QueryRowContext(ryw.WithDecision(ctx, ryw.HopefulDecision(name, ahead)), "SELECT 2").Scan(&v)
	}()
	watch := openPool(t, r.URL)
	waitUntil(t, func() bool {
		var n int
		err := watch.QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").Scan(&n)
		return err == nil && n > 0
	})
	if err := r.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || v != 2 {
		t.Errorf("a hopeful read whose replica resumed replay while it waited = %d, %v; want 2 from the replica", v, err)
	}
}

// TestAReplayCheckRidesWithItsRead: on a direct connection, a read whose
// position the connection has not settled sends the replay check and the
// statement together, in one transaction: a check that fails skips the
// statement (a statement that would fail is not run), and one that passes
// runs it, with the rows a plain read returns. The connection keeps the
// position the check read. Inside a transaction the check still goes
// first, on its own. Control: the same read without the check gets the
// paused replica's stale row.
func TestAReplayCheckRidesWithItsRead(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	// A row the replica has, before its replay is paused.
	table := fmt.Sprintf("rides_%d", seq.Add(1))
	for _, q := range []string{"CREATE TABLE " + table + " (v int)", "INSERT INTO " + table + " VALUES (1)"} {
		if err := stack.Primary.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	created, err := stack.Primary.CurrentLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		at, err := stack.Replicas[0].ReplayLSN(ctx)
		return err == nil && at >= created
	})
	pool, name, replayed, ahead := pausedReplica(t, 1)
	// The row changes on the primary only.
	if err := stack.Primary.Exec(ctx, "UPDATE "+table+" SET v = 2"); err != nil {
		t.Fatal(err)
	}
	updated, err := stack.Primary.CurrentLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := pool.QueryRowContext(ctx, "SELECT v FROM "+table).Scan(&v); err != nil || v != 1 {
		t.Fatalf("control: an unchecked read of the paused replica = %d, %v; want the stale 1", v, err)
	}
	var stale *ryw.BehindError
	if err := pool.QueryRowContext(needing(ctx, name, updated), "SELECT v FROM "+table).Scan(&v); !errors.As(err, &stale) {
		t.Errorf("a checked read needing the update = %d, %v; want BehindError, not the stale row", v, err)
	}
	checks := func(f func()) int64 {
		before := ryw.ReplayChecks()
		f()
		return ryw.ReplayChecks() - before
	}
	var behind *ryw.BehindError
	if n := checks(func() {
		var v int
		err := pool.QueryRowContext(needing(ctx, name, ahead), "SELECT 1 / (0 * $1::int)", 1).Scan(&v)
		if !errors.As(err, &behind) || behind.Need != ahead || behind.Replayed != replayed {
			t.Errorf("a read needing %s on a replica at %s, whose statement would fail = %v; want BehindError, the statement skipped", ahead, replayed, err)
		}
	}); n != 1 {
		t.Errorf("a read past the paused replica: %d checks, want 1", n)
	}
	// The connection has seen where the replica is from the failed check.
	if n := checks(func() {
		var v int
		err := pool.QueryRowContext(needing(ctx, name, replayed), "SELECT 1 / (0 * $1::int)", 1).Scan(&v)
		if err == nil || !strings.Contains(err.Error(), "division by zero") {
			t.Errorf("a read the replica can serve, whose statement fails = %v; want the statement's error", err)
		}
	}); n != 0 {
		t.Errorf("a read at the position the failed check read: %d checks, want 0", n)
	}
	// A new connection: the check passes and the statement runs with it.
	fresh, err := ryw.OpenPool(stack.Replicas[0].URL, true, ryw.PoolOptions{MaxOpen: 1, MaxIdle: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if n := checks(func() {
		var got []string
		rows, err := fresh.QueryContext(needing(ctx, name, replayed), "SELECT g::text || $1 FROM generate_series(1, 3) g", "x")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			got = append(got, s)
		}
		if err := rows.Close(); err != nil || strings.Join(got, ",") != "1x,2x,3x" {
			t.Errorf("a checked read = %q, %v; want 1x,2x,3x", got, err)
		}
	}); n != 1 {
		t.Errorf("a checked read on a new connection: %d checks, want 1", n)
	}
	if n := checks(func() {
		var v int
		if err := fresh.QueryRowContext(needing(ctx, name, replayed), "SELECT 2").Scan(&v); err != nil || v != 2 {
			t.Errorf("a settled read = %d, %v", v, err)
		}
	}); n != 0 {
		t.Errorf("a read the connection has settled: %d checks, want 0", n)
	}
	// In a transaction the check comes before BEGIN.
	if n := checks(func() {
		if _, err := fresh.BeginTx(needing(ctx, name, ahead), &sql.TxOptions{ReadOnly: true}); !errors.As(err, &behind) {
			t.Errorf("a transaction needing %s on a replica at %s = %v; want BehindError", ahead, replayed, err)
		}
	}); n != 1 {
		t.Errorf("a transaction past the paused replica: %d checks, want 1", n)
	}
}

// TestMarksOnlyRise is hole 7 of the fault suite: two writes of one user
// recorded out of order (or by instances whose clocks differ) must not
// lower either mark. The control shows that a plain SET, what the tracker
// did before, lowers the time mark.
func TestMarksOnlyRise(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	tracker, client := newTracker(t, time.Minute)
	user := fmt.Sprintf("user-%d", seq.Add(1))
	for _, l := range []ryw.LSN{0x1_00000010, 0x2_00000001, 0x1_FFFFFFFF, 0xFFFFFFFF_00000000, 5} {
		if _, err := tracker.Record(ctx, user, tl1(l)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := tracker.Lookup(ctx, user, true)
	if err != nil || m.Token != tl1(0xFFFFFFFF_00000000) {
		t.Errorf("Lookup = %+v, %v; want the highest token, FFFFFFFF/0", m, err)
	}
	// A later timeline is later, whatever its LSN, and Record returns what
	// the mark held; an earlier timeline does not lower it.
	tl2 := ryw.Position{System: tl1(0).System, Timeline: 2, LSN: 0x3_00000000}
	if prev, err := tracker.Record(ctx, user, tl2); err != nil || prev != tl1(0xFFFFFFFF_00000000) {
		t.Errorf("Record on timeline 2 = %+v, %v; want the timeline 1 mark returned", prev, err)
	}
	if prev, err := tracker.Record(ctx, user, tl1(0xFFFFFFFF_FFFFFFFF)); err != nil || prev != tl2 {
		t.Errorf("Record on timeline 1 = %+v, %v; want the timeline 2 mark returned", prev, err)
	}
	if m, err := tracker.Lookup(ctx, user, true); err != nil || m.Token != tl2 {
		t.Errorf("Lookup = %+v, %v; want the timeline 2 mark kept", m, err)
	}
	// Repair replaces only the mark it was asked to.
	if ok, err := tracker.Repair(ctx, user, tl1(5), tl1(4)); ok || err != nil {
		t.Errorf("Repair of a mark not held = %v, %v", ok, err)
	}
	if ok, err := tracker.Repair(ctx, user, tl2, tl1(4)); !ok || err != nil {
		t.Errorf("Repair of the mark held = %v, %v", ok, err)
	}
	if m, err := tracker.Lookup(ctx, user, true); err != nil || m.Token != tl1(4) {
		t.Errorf("after Repair: %+v, %v", m, err)
	}
	if ttl := client.PTTL(ctx, ryw.TokenKey(user)).Val(); ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("token TTL = %v, want about a minute", ttl)
	}

	// A later write's time mark is in Redis (set by an instance whose
	// record overtook this one's); recording this write must keep it.
	later := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05.000000Z")
	if err := client.Set(ctx, ryw.MarkerKey(user), later, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := tracker.Record(ctx, user, tl1(0x1)); err != nil {
		t.Fatal(err)
	}
	if got := client.Get(ctx, ryw.MarkerKey(user)).Val(); got != later {
		t.Errorf("time mark = %q after an earlier write recorded late; want it kept at %q", got, later)
	}
	// Control: a plain SET of the earlier time, what the tracker used to
	// do, lowers it.
	if err := client.Set(ctx, ryw.MarkerKey(user), time.Now().UTC().Format(time.RFC3339Nano), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if got := client.Get(ctx, ryw.MarkerKey(user)).Val(); got >= later {
		t.Errorf("control: a plain SET did not lower the mark (%q)", got)
	}
	if m, err := tracker.Lookup(ctx, "nobody", true); m.HasWrite() || err != nil {
		t.Errorf("Lookup of a user without writes = %+v, %v", m, err)
	}
}

// TestAConnectionSkipsChecksItHasAlreadySettled: once a connection has seen
// its replica replay past a position, reads that need no more than that
// skip the round trip, since replay only moves forward while the connection
// lives; a read that needs more is still checked, and still refused by a
// replica that has not replayed it.
func TestAConnectionSkipsChecksItHasAlreadySettled(t *testing.T) {
	needStack(t)
	query, replayed, ahead := pausedReplicaPool(t, 1)
	checks := func(f func()) int64 {
		before := ryw.ReplayChecks()
		f()
		return ryw.ReplayChecks() - before
	}
	if n := checks(func() {
		if err := query(replayed); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("first read: %d checks, want 1", n)
	}
	if n := checks(func() {
		for _, min := range []ryw.LSN{replayed, replayed - 1, 1} {
			if err := query(min); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 0 {
		t.Errorf("reads the connection has settled: %d checks, want 0", n)
	}
	var behind *ryw.BehindError
	if n := checks(func() {
		if err := query(ahead); !errors.As(err, &behind) {
			t.Errorf("a read past the paused replica = %v; want BehindError", err)
		}
	}); n != 1 {
		t.Errorf("a read needing more: %d checks, want 1", n)
	}
}
