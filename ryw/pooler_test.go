package ryw_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// behindPooler skips a test about PgBouncer when the package's stack has
// none (make test runs the package again with RYW_TEST_POOLER set).
func behindPooler(t *testing.T) {
	t.Helper()
	needStack(t)
	if stack.Primary.Pooler() == nil {
		t.Skip("needs a PgBouncer in front of the nodes: RYW_TEST_POOLER=transaction or session")
	}
}

// TestPooledReadsCheckInTheirOwnTransaction: behind PgBouncer, the replay
// check of an own-write read runs in the read's transaction, so on the
// server connection the pooler gave the read, whichever that is: the read
// sees what the check left in its transaction. Every server connection of
// the pool serves some of the reads (more readers than connections), and
// each is checked. The pooler is found without being named (PoolerDetect).
func TestPooledReadsCheckInTheirOwnTransaction(t *testing.T) {
	behindPooler(t)
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN})
	if a := f.do(t, "POST", "/k", "u1", "v1"); a.status != 200 || a.node != ryw.Primary {
		t.Fatalf("write: %+v", a)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, f.rw)
	checksBefore := ryw.ReplayChecks()
	replicaReads := 0
	deadline := time.Now().Add(10 * time.Second)
	for replicaReads < 20 {
		a := f.do(t, "GET", "/k?via=checked", "u1", "")
		if a.status != 200 {
			t.Fatalf("own read: %+v", a)
		}
		checked, standby, _ := strings.Cut(a.body, "|")
		if a.node == ryw.Primary {
			if time.Now().After(deadline) {
				t.Fatalf("no replica served the caught-up read: %+v", a)
			}
			continue
		}
		replicaReads++
		if standby != "true" {
			t.Errorf("read from %s ran on a primary: %+v", a.node, a)
		}
		lsn, err := ryw.ParseLSN(checked)
		if err != nil || lsn == 0 {
			t.Errorf("read from %s (%s): the read's transaction holds no replay check (ryw.checked = %q)", a.node, a.reason, checked)
		}
	}
	if n := ryw.ReplayChecks() - checksBefore; n < int64(replicaReads) {
		t.Errorf("%d replica reads, %d replay checks: a pooled read must never skip its check", replicaReads, n)
	}
}

// TestPooledPreparedStatementsAndPausedReplicas: behind PgBouncer a
// prepared statement works (sent unnamed), and a user's write is read back
// fresh with every replica paused, through each kind of read; the
// unchecked control reads it stale from a replica.
func TestPooledPreparedStatementsAndPausedReplicas(t *testing.T) {
	behindPooler(t)
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN})
	if a := f.do(t, "POST", "/k", "u1", "v1"); a.status != 200 {
		t.Fatalf("write: %+v", a)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, f.rw)
	stack.PauseReplayForTest(t, stack.Replicas...)
	if a := f.do(t, "POST", "/k", "u1", "v2"); a.status != 200 {
		t.Fatalf("second write: %+v", a)
	}
	for _, via := range []string{"take", "raw", "sql", "prepared", "tx-read"} {
		if a := f.do(t, "GET", "/k?via="+via, "u1", ""); a.status != 200 || a.body != "v2" {
			t.Errorf("own read via %s with the replicas paused: %+v, want v2", via, a)
		}
	}
	if c := f.do(t, "GET", "/k?unchecked&via=sql", "u1", ""); c.status != 200 || c.body != "v1" || c.node == ryw.Primary {
		t.Errorf("control: %+v, want the stale v1 from a replica", c)
	}
}

// TestPoolerNoneRefusesAPooledNode: a configuration that says the nodes
// are reached directly, given PgBouncer's addresses, is a start-up error
// that says what is wrong, not a stream of failing statements.
func TestPoolerNoneRefusesAPooledNode(t *testing.T) {
	behindPooler(t)
	rw, err := ryw.New(t.Context(), onStack(ryw.Config{Pooler: ryw.PoolerNone}))
	if err == nil {
		rw.Close()
		t.Fatal("New accepted PgBouncer's addresses with PoolerNone")
	}
	if !errors.Is(err, ryw.ErrPooled) || !strings.Contains(err.Error(), "primary") || !strings.Contains(err.Error(), "replica1") {
		t.Errorf("New: %v; want ErrPooled naming the primary and each replica", err)
	}
}

// TestPoolerPresentOnDirectNodes: the pooled code paths (unnamed
// statements, the check in the read's transaction) keep read-your-writes
// on direct connections too, so that saying "present" is never unsafe.
func TestPoolerPresentOnDirectNodes(t *testing.T) {
	needStack(t)
	if stack.Primary.Pooler() != nil {
		t.Skip("about direct connections")
	}
	f := newFrontDoor(t, ryw.Config{Mode: ryw.ModeLSN, Pooler: ryw.PoolerPresent})
	if a := f.do(t, "POST", "/k", "u1", "v1"); a.status != 200 {
		t.Fatalf("write: %+v", a)
	}
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, f.rw)
	// Caught up: a replica serves the own read, checked in its transaction.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := f.do(t, "GET", "/k?via=checked", "u1", "")
		if a.node != ryw.Primary {
			if checked, _, _ := strings.Cut(a.body, "|"); checked == "" {
				t.Errorf("read from %s holds no replay check: %+v", a.node, a)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica served the caught-up read: %+v", a)
		}
	}
	stack.PauseReplayForTest(t, stack.Replicas...)
	if a := f.do(t, "POST", "/k", "u1", "v2"); a.status != 200 {
		t.Fatalf("second write: %+v", a)
	}
	for _, via := range []string{"take", "raw", "sql", "prepared"} {
		if a := f.do(t, "GET", "/k?via="+via, "u1", ""); a.status != 200 || a.body != "v2" {
			t.Errorf("own read via %s with the replicas paused: %+v, want v2", via, a)
		}
	}
	if c := f.do(t, "GET", "/k?unchecked&via=sql", "u1", ""); c.status != 200 || c.body != "v1" || c.node == ryw.Primary {
		t.Errorf("control: %+v, want the stale v1 from a replica", c)
	}
}

// TestAnAuroraReaderIsRefusedAtStartUp: a replica that is an Aurora reader
// (told by aurora_version(), here created on the primary and replicated,
// as Aurora has it) exposes no replay position to check reads against, so
// New refuses it instead of running without ever offloading, or worse.
// The same nodes without the function start (the control).
func TestAnAuroraReaderIsRefusedAtStartUp(t *testing.T) {
	needStack(t)
	cfg := onStack(ryw.Config{})
	rw, err := ryw.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("control: New on streaming replicas: %v", err)
	}
	rw.Close()
	if err := stack.Primary.Exec(t.Context(), "CREATE FUNCTION aurora_version() RETURNS text LANGUAGE sql AS $$ SELECT '16.4.0' $$"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background() // t.Context is done by now
		if err := stack.Primary.Exec(ctx, "DROP FUNCTION aurora_version()"); err != nil {
			t.Error(err)
		}
		if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
			t.Error(err)
		}
	})
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	rw, err = ryw.New(t.Context(), cfg)
	if err == nil {
		rw.Close()
		t.Fatal("New accepted Aurora readers as replicas")
	}
	if !errors.Is(err, ryw.ErrAurora) || !strings.Contains(err.Error(), "replica1") || strings.Contains(err.Error(), "primary:") {
		t.Errorf("New: %v; want ErrAurora naming each replica, not the writer", err)
	}
}
