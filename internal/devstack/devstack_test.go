package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/ryw"
)

// stack is the package's one cluster: a primary, replica1 and a delayed
// replica2, started once in TestMain.
var stack *Stack

const testDelay = time.Second

func TestMain(m *testing.M) {
	os.Exit(RunTests(m, Options{Replicas: 2, ReplicaDelay: testDelay, Migrate: true}, &stack))
}

var tableSeq atomic.Int64

// newTable creates a fresh table on the primary for one test and waits until
// the non-delayed replicas have it.
func newTable(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("probe_%d_%d", os.Getpid(), tableSeq.Add(1))
	if err := stack.Primary.Exec(t.Context(), "CREATE TABLE "+name+" (id int PRIMARY KEY, v text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas[0]); err != nil {
		t.Fatal(err)
	}
	return name
}

// write inserts a row on the primary and returns the primary's LSN after
// the commit: once a replica has replayed that far, it must see the row.
func write(t *testing.T, table string, id int, v string) ryw.LSN {
	t.Helper()
	if err := stack.Primary.Exec(t.Context(), "INSERT INTO "+table+" VALUES ($1, $2)", id, v); err != nil {
		t.Fatal(err)
	}
	lsn, err := stack.Primary.CurrentLSN(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// visible reports whether the row is visible on the node.
func visible(t *testing.T, n *Node, table string, id int) bool {
	t.Helper()
	var found bool
	if err := n.QueryRow(t.Context(), []any{&found}, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE id = $1)", id); err != nil {
		t.Fatal(err)
	}
	return found
}

func TestReplicasStreamFromThePrimary(t *testing.T) {
	ctx := t.Context()
	conn, err := stack.Primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT r.application_name, r.state, s.slot_name
		FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
		ORDER BY r.application_name`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var app, state, slot string
		if err := rows.Scan(&app, &state, &slot); err != nil {
			t.Fatal(err)
		}
		got = append(got, app+":"+state+":"+slot)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "replica1:streaming:replica1 replica2:streaming:replica2"
	if strings.Join(got, " ") != want {
		t.Errorf("pg_stat_replication = %v, want %s", got, want)
	}

	for _, n := range append([]*Node{stack.Primary}, stack.Replicas...) {
		var inRecovery bool
		if err := n.QueryRow(ctx, []any{&inRecovery}, "SELECT pg_is_in_recovery()"); err != nil {
			t.Fatal(err)
		}
		if inRecovery != n.IsReplica() {
			t.Errorf("%s: pg_is_in_recovery() = %v", n.Name, inRecovery)
		}
	}
}

func TestMigrationsReachEveryNode(t *testing.T) {
	for _, n := range stack.Replicas {
		var products int
		if err := n.QueryRow(t.Context(), []any{&products}, "SELECT count(*) FROM products"); err != nil {
			t.Fatal(err)
		}
		if products != 3 {
			t.Errorf("%s has %d seed products, want 3", n.Name, products)
		}
	}
}

func TestWriteReachesReplica(t *testing.T) {
	table := newTable(t)
	lsn := write(t, table, 1, "a")
	if err := stack.Replicas[0].WaitReplayed(t.Context(), lsn); err != nil {
		t.Fatal(err)
	}
	if !visible(t, stack.Replicas[0], table, 1) {
		t.Error("replica1 replayed past the write but does not show the row")
	}
}

func TestDelayedReplicaAppliesOnlyAfterItsDelay(t *testing.T) {
	ctx := t.Context()
	delayed := stack.Replicas[1]
	var setting string
	if err := delayed.QueryRow(ctx, []any{&setting}, "SHOW recovery_min_apply_delay"); err != nil {
		t.Fatal(err)
	}
	if setting != "1s" {
		t.Errorf("%s: recovery_min_apply_delay = %q, want 1s", delayed.Name, setting)
	}
	table := newTable(t)
	var before time.Time
	if err := stack.Primary.QueryRow(ctx, []any{&before}, "SELECT clock_timestamp()"); err != nil {
		t.Fatal(err)
	}
	lsn := write(t, table, 1, "a")
	if err := delayed.WaitReplayed(ctx, lsn); err != nil {
		t.Fatal(err)
	}
	// The write committed after `before`, and a delayed replica applies a
	// commit no earlier than its commit time plus the delay.
	var at time.Time
	if err := delayed.QueryRow(ctx, []any{&at}, "SELECT clock_timestamp()"); err != nil {
		t.Fatal(err)
	}
	if !visible(t, delayed, table, 1) {
		t.Fatal("delayed replica replayed past the write but does not show the row")
	}
	if got := at.Sub(before); got < testDelay {
		t.Errorf("delayed replica applied the write %s after it was made, want at least %s", got, testDelay)
	}
}

func TestPausedReplicaReceivesButDoesNotReplay(t *testing.T) {
	ctx := t.Context()
	r := stack.Replicas[0]
	table := newTable(t)
	stack.PauseReplayForTest(t, r)

	lsn := write(t, table, 1, "fresh")
	// Wait until the WAL holding the write has arrived, so "not visible"
	// below is down to the pause, not to the network.
	err := poll(ctx, 5*time.Millisecond, func(ctx context.Context) (bool, error) {
		got, err := r.ReceiveLSN(ctx)
		return err == nil && got >= lsn, err
	})
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := r.ReplayLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if replayed >= lsn {
		t.Errorf("paused replica replayed to %s, past the write at %s", replayed, lsn)
	}
	if visible(t, r, table, 1) {
		t.Error("paused replica shows a row written after the pause")
	}
	if !visible(t, stack.Primary, table, 1) {
		t.Error("the primary does not show its own write")
	}

	if err := r.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if paused, err := r.ReplayPaused(ctx); err != nil || paused {
		t.Errorf("after resume: paused=%v err=%v", paused, err)
	}
	if err := r.WaitReplayed(ctx, lsn); err != nil {
		t.Fatal(err)
	}
	if !visible(t, r, table, 1) {
		t.Error("resumed replica does not show the row after catching up")
	}
}

func TestPauseReplayOnPrimaryIsRefused(t *testing.T) {
	if err := stack.Primary.PauseReplay(t.Context()); err == nil {
		t.Error("PauseReplay on the primary succeeded")
	}
}

func TestKilledReplicaRestartsAndCatchesUp(t *testing.T) {
	testRestart(t, (*Node).KillForTest)
}

func TestStoppedReplicaRestartsAndCatchesUp(t *testing.T) {
	testRestart(t, (*Node).StopForTest)
}

func testRestart(t *testing.T, halt func(*Node, testing.TB)) {
	ctx := t.Context()
	r := stack.Replicas[0]
	table := newTable(t)
	write(t, table, 1, "before")
	halt(r, t)
	if r.Running() {
		t.Fatal("replica still running after it was halted")
	}
	if err := r.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a halted replica answered a query")
	}
	lsn := write(t, table, 2, "while down")

	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitReplayed(ctx, lsn); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 2; id++ {
		if !visible(t, r, table, id) {
			t.Errorf("restarted replica misses row %d", id)
		}
	}
}

func TestRedisStopAndStart(t *testing.T) {
	ctx := t.Context()
	opts, err := redis.ParseURL(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	stack.Redis.StopForTest(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a stopped Redis answered PING")
	}
	if err := stack.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("Redis kept data across a restart (get: %v); devstack's Redis must start empty", err)
	}
}

func TestStateDescribesTheStack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := stack.WriteState(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"primary": "` + stack.Primary.URL + `"`,
		`"name": "replica1"`, `"url": "` + stack.Replicas[0].URL + `"`,
		`"name": "replica2"`, `"redis": "` + stack.Redis.URL + `"`, `"api": []`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("state file lacks %s:\n%s", want, b)
		}
	}
	if got := stack.ReplicaURLs(); got != "replica1="+stack.Replicas[0].URL+",replica2="+stack.Replicas[1].URL {
		t.Errorf("ReplicaURLs() = %q", got)
	}
}

// processes and ports a stack holds, to check that Close releases them.
type footprint struct {
	pids  []int
	ports []int
	dir   string
}

func footprintOf(s *Stack) footprint {
	f := footprint{dir: s.Dir}
	for _, n := range append([]*Node{s.Primary}, s.Replicas...) {
		if n != nil && n.proc != nil {
			f.pids = append(f.pids, n.proc.cmd.Process.Pid)
			f.ports = append(f.ports, n.Port)
		}
	}
	if s.Redis != nil && s.Redis.proc != nil {
		f.pids = append(f.pids, s.Redis.proc.cmd.Process.Pid)
		f.ports = append(f.ports, s.Redis.Port)
	}
	return f
}

func (f footprint) check(t *testing.T) {
	t.Helper()
	for _, pid := range f.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
	for _, port := range f.ports {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Errorf("port %d still in use after Close: %v", port, err)
			continue
		}
		l.Close()
	}
	if _, err := os.Stat(f.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists after Close (stat: %v)", f.dir, err)
	}
}

// parentDir is a directory the unprivileged PostgreSQL account can enter.
// (t.TempDir's parent is private to root.)
func parentDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ryw-devstack-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCloseLeavesNothingBehind(t *testing.T) {
	s, err := Start(t.Context(), Options{Replicas: 1, TempDir: parentDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := footprintOf(s)
	if len(f.pids) != 3 {
		t.Fatalf("stack runs %d processes, want 3 (primary, replica1, redis)", len(f.pids))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFailedStartLeavesNothingBehind(t *testing.T) {
	parent := parentDir(t)
	var f footprint
	var s *Stack
	boom := errors.New("injected failure")
	opts := Options{Replicas: 1, TempDir: parent}
	opts.beforeRedis = func() error {
		// Record what is running at the moment of failure.
		entries, _ := os.ReadDir(parent)
		if len(entries) != 1 {
			return fmt.Errorf("want one stack directory, found %d", len(entries))
		}
		s = &Stack{Dir: filepath.Join(parent, entries[0].Name())}
		return boom
	}
	got, err := Start(t.Context(), opts)
	if !errors.Is(err, boom) || got != nil {
		t.Fatalf("Start = %v, %v; want nil, the injected failure", got, err)
	}
	f.dir = s.Dir
	f.check(t)
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed start left %d entries in its temp dir", len(entries))
	}
	// The primary and replica1 were running when Start failed: they must
	// be gone.
	if pids := processesUnder(s.Dir); len(pids) > 0 {
		t.Errorf("processes still run from %s: %v", s.Dir, pids)
	}
}

// processesUnder lists the processes whose command line mentions dir.
func processesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestMissingBinariesSayWhatToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("PG_BINDIR", "/nonexistent")
	_, err := Start(t.Context(), Options{})
	if err == nil {
		t.Fatal("Start succeeded without binaries")
	}
	for _, want := range []string{"PG_BINDIR=/nonexistent", "redis-server is not on PATH", "apt-get install redis-server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestFindBinaries(t *testing.T) {
	b, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if !hasAll(b.pgBin, pgPrograms) {
		t.Errorf("findBinaries chose %s, which lacks the server programs", b.pgBin)
	}
}

func TestProxyForwardsBlackholesAndHeals(t *testing.T) {
	ctx := t.Context()
	p, url, err := StartProxyForURL(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if err := p.Blackhole(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := c.Ping(short).Err(); err == nil {
		t.Fatal("a blackholed link answered")
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) { return c.Ping(ctx).Err() == nil, nil }); err != nil {
		t.Fatalf("after Heal: %v", err)
	}
	if err := p.Reset(); err != nil {
		t.Fatal(err)
	}
	c2 := redis.NewClient(opt)
	defer c2.Close()
	if err := c2.Ping(ctx).Err(); err == nil {
		t.Fatal("a reset link answered")
	}
}

// TestFailover: the primary is killed, replica1 is promoted onto a new
// timeline, replica2 follows it and replays what is written after; a
// multi-host URL with target_session_attrs=read-write reaches the new
// primary. A control first: before the failover the same URL reaches the
// old primary.
func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stack of its own")
	}
	ctx := t.Context()
	s, err := Start(ctx, Options{Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	multi := s.PrimaryURLs()
	port := func() int {
		t.Helper()
		conn, err := pgx.Connect(ctx, multi)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var p int
		if err := conn.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := port(); p != s.Primary.Port {
		t.Fatalf("before the failover the multi-host URL reached port %d; want the primary's %d", p, s.Primary.Port)
	}
	if err := s.Primary.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCaughtUp(ctx, s.Replicas...); err != nil {
		t.Fatal(err)
	}
	r1, r2 := s.Replicas[0], s.Replicas[1]
	before, err := r1.Timeline(ctx)
	if err != nil {
		t.Fatal(err)
	}

	old, err := s.Failover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old.Running() || s.Primary != r1 || len(s.Replicas) != 1 || s.Replicas[0] != r2 {
		t.Fatalf("after the failover: old running %v, primary %s, replicas %v", old.Running(), s.Primary.Name, s.Replicas)
	}
	after, err := r1.Timeline(ctx)
	if err != nil || after != before+1 {
		t.Fatalf("the promoted node is on timeline %d (%v); want %d", after, err, before+1)
	}
	if tli, err := r2.Timeline(ctx); err != nil || tli != after {
		t.Errorf("replica2 streams timeline %d (%v); want %d", tli, err, after)
	}
	if err := s.Primary.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCaughtUp(ctx, r2); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := r2.QueryRow(ctx, []any{&n}, "SELECT count(*) FROM t"); err != nil || n != 2 {
		t.Errorf("replica2 has %d rows (%v); want both, from before and after the failover", n, err)
	}
	if p := port(); p != r1.Port {
		t.Errorf("after the failover the multi-host URL reached port %d; want the new primary's %d", p, r1.Port)
	}
}

// TestASynchronousQuorumLosesNoAcknowledgedWriteInAFailover: with both
// replicas cut off from the primary, asynchronous commits are acknowledged
// and then lost by the failover (the control). With a quorum of one
// synchronous standby, the same commits are never acknowledged; once
// replica2 is back, commits are acknowledged again, and the failover, which
// promotes the most advanced replica (replica2, not the first), keeps every
// one of them.
func TestASynchronousQuorumLosesNoAcknowledgedWriteInAFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stacks of its own")
	}
	for _, quorum := range []int{0, 1} {
		t.Run(fmt.Sprintf("quorum %d", quorum), func(t *testing.T) {
			ctx := t.Context()
			s, err := Start(ctx, Options{Replicas: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if err := s.Primary.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
				t.Fatal(err)
			}
			if err := s.WaitCaughtUp(ctx, s.Replicas...); err != nil {
				t.Fatal(err)
			}
			if err := s.SetSynchronousStandbys(ctx, quorum); err != nil {
				t.Fatal(err)
			}
			primary := s.Primary
			// Both replicas stop receiving: their WAL receivers point nowhere.
			for _, r := range s.Replicas {
				if err := r.Detach(ctx); err != nil {
					t.Fatal(err)
				}
			}
			acked := map[int]bool{}
			insert := func(id int) {
				c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				if err := s.Primary.Exec(c, "INSERT INTO t VALUES ($1)", id); err == nil {
					acked[id] = true
				}
			}
			for id := 1; id <= 5; id++ {
				insert(id)
			}
			if quorum > 0 {
				if len(acked) != 0 {
					t.Fatalf("with no standby receiving, %d commits were acknowledged; want 0", len(acked))
				}
				// replica2 receives again: commits are acknowledged again,
				// and replica2 is now the most advanced replica.
				if err := s.Replicas[1].Attach(ctx, primary); err != nil {
					t.Fatal(err)
				}
				for id := 6; id <= 10; id++ {
					insert(id)
				}
				if len(acked) != 5 {
					t.Fatalf("with replica2 back, %d of 5 commits were acknowledged", len(acked))
				}
			}
			if _, err := s.Failover(ctx); err != nil {
				t.Fatal(err)
			}
			lost := 0
			for id := range acked {
				var n int
				if err := s.Primary.QueryRow(ctx, []any{&n}, "SELECT count(*) FROM t WHERE id = $1", id); err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					lost++
				}
			}
			switch {
			case quorum == 0 && (len(acked) != 5 || lost != 5):
				t.Errorf("asynchronous: %d acknowledged, %d lost by the failover; want 5 and 5 (the control)", len(acked), lost)
			case quorum > 0 && lost != 0:
				t.Errorf("a quorum of %d: %d of %d acknowledged commits lost by the failover; want 0", quorum, lost, len(acked))
			case quorum > 0 && s.Primary.Name != "replica2":
				t.Errorf("the failover promoted %s; want replica2, the only one that received the commits", s.Primary.Name)
			}
			t.Logf("%d acknowledged, %d lost; promoted %s", len(acked), lost, s.Primary.Name)
		})
	}
}
