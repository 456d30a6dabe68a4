package ryw_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/ryw"
)

// overloadBalancer is a balancer on the stack with small pools and a short
// replica timeout, every replica in rotation.
func overloadBalancer(t *testing.T, conns int) *ryw.Balancer {
	t.Helper()
	cfg := onStack(ryw.Config{Mode: ryw.ModeOff, MaxConns: conns, ReplicaTimeout: 300 * time.Millisecond, GORM: &gorm.Config{Logger: logger.Discard}})
	rw, err := ryw.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Close() })
	waitHealthy(t, rw)
	return rw
}

// fill takes every connection of a pool until the test ends: the pool is
// saturated by its own users, and the node behind it is idle.
func fill(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	for range n {
		c, err := db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

func takenOut(rw *ryw.Balancer) (n uint64) {
	for _, st := range rw.Status() {
		n += st.TakenOut
	}
	return n
}

// TestOverloadPoolWaitKeepsTheReplica: with every connection of both
// replica pools taken (MaxConns 2) and many reads at once, each read waits
// for a pool slot past the replica timeout. That says nothing about the
// replicas, which never see the reads: they stay in rotation, and the
// reads are retried on the primary (replica-busy) or, past the retry
// budget, fail with ErrOverloaded. The control: a read that does reach a
// replica and overruns the timeout there still takes it out of rotation
// and is retried on the primary, as before (issue 20).
func TestOverloadPoolWaitKeepsTheReplica(t *testing.T) {
	needStack(t)
	const conns = 2
	rw := overloadBalancer(t, conns)
	for _, r := range stack.Replicas {
		fill(t, ryw.ReplicaPool(rw, r.Name), conns)
	}
	type outcome struct {
		err    error
		node   string
		reason ryw.Reason
	}
	table := newTable(t)
	// Each way of reading: database/sql, GORM's row callback (Raw) and its
	// query callback (Find).
	read := func(way int) outcome {
		ctx, job := rw.Begin(t.Context(), "", ryw.UncheckedRead)
		var n int
		var err error
		switch way {
		case 0:
			err = rw.SQL().QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		case 1:
			err = rw.GORM().WithContext(ctx).Raw("SELECT count(*) FROM " + table).Scan(&n).Error
		default:
			var rows []struct{ K string }
			err = rw.GORM().WithContext(ctx).Table(table).Find(&rows).Error
		}
		if ferr := job.Finish(); err == nil {
			err = ferr
		}
		node, reason := job.ServedBy()
		return outcome{err, node, reason}
	}
	var wg sync.WaitGroup
	outcomes := make(chan outcome, 42)
	for i := range 42 {
		wg.Go(func() { outcomes <- read(i % 3) })
	}
	wg.Wait()
	close(outcomes)
	var retried, shed int
	for o := range outcomes {
		switch {
		case o.err == nil && o.node == ryw.Primary && o.reason == ryw.ReasonReplicaBusy:
			retried++
		case errors.Is(o.err, ryw.ErrOverloaded), errors.Is(o.err, context.DeadlineExceeded) && o.node == "":
			// Shed (a database/sql Row keeps its deadline's error).
			shed++
		default:
			t.Errorf("read with the replica pools full: %+v", o)
		}
	}
	if n := takenOut(rw); n != 0 {
		t.Errorf("replicas taken out of rotation %d times for reads that waited for our own pool: %+v", n, rw.Status())
	}
	if retried == 0 {
		t.Errorf("no read retried on the primary (%d shed)", shed)
	}
	if got := rw.Counts().Retries[ryw.ReasonReplicaBusy]; got != uint64(retried) {
		t.Errorf("replica-busy retries counted: %d, seen %d", got, retried)
	}
	t.Logf("42 reads on full pools: %d retried on the primary, %d shed", retried, shed)

	// Control: a read that reached a replica and overran the timeout there.
	rw2 := overloadBalancer(t, conns)
	ctx, job := rw2.Begin(t.Context(), "", ryw.UncheckedRead)
	var s string
	err := rw2.SQL().QueryRowContext(ctx, "SELECT pg_sleep(1)::text").Scan(&s)
	job.Finish()
	if node, reason := job.ServedBy(); err != nil || node != ryw.Primary || reason != ryw.ReasonReplicaFailed {
		t.Errorf("a read that overran on a replica: %v, served by %s (%s); want it retried on the primary (replica-failed)", err, node, reason)
	}
	if n := takenOut(rw2); n != 1 {
		t.Errorf("a read that overran on a replica took replicas out %d times; want 1: %+v", n, rw2.Status())
	}
}

// TestOverloadPoolsAreWarmBeforeTheReplicasServe: New opens every pool's
// connections before the replicas join the rotation, so the first reads
// under load do not each open one within their own deadline. Control: a
// pool as OpenPool leaves it has none open.
func TestOverloadPoolsAreWarmBeforeTheReplicasServe(t *testing.T) {
	needStack(t)
	const conns = 6
	rw, err := ryw.New(t.Context(), onStack(ryw.Config{Mode: ryw.ModeOff, MaxConns: conns}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Close() })
	if st := ryw.PrimaryPool(rw).Stats(); st.OpenConnections != conns || st.Idle != conns {
		t.Errorf("primary pool after New: %d open, %d idle; want %d warm", st.OpenConnections, st.Idle, conns)
	}
	for _, r := range stack.Replicas {
		if st := ryw.ReplicaPool(rw, r.Name).Stats(); st.OpenConnections != conns || st.Idle != conns {
			t.Errorf("%s pool after New: %d open, %d idle; want %d warm", r.Name, st.OpenConnections, st.Idle, conns)
		}
	}
	cold, err := ryw.OpenPool(stack.ClientURL(stack.Replicas[0]), true, ryw.PoolOptions{MaxOpen: conns, MaxIdle: conns})
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()
	if n := cold.Stats().OpenConnections; n != 0 {
		t.Errorf("a pool OpenPool left: %d open; want 0 (the control)", n)
	}
}
