package ryw

import (
	"context"
	"database/sql"
	"time"
)

// ReplicaPool is the balancer's application pool for the replica name
// (nil if none), for tests that fill it.
func ReplicaPool(b *Balancer, name string) *sql.DB { return b.replica(name) }

// PrimaryPool is the balancer's application pool for the primary.
func PrimaryPool(b *Balancer) *sql.DB { return b.primary }

// HoldMarkMessages makes the tracker's cache apply no published message
// until hold is closed; with noBarrier, it trusts what it holds without
// waiting for a barrier (the control that shows the barrier is needed).
func HoldMarkMessages(t *RedisTracker, hold chan struct{}, noBarrier bool) {
	if hold == nil {
		t.cache.testHold.Store(nil)
	} else {
		t.cache.testHold.Store(&hold)
	}
	t.cache.testNoBarrier.Store(noBarrier)
}

// MarkCacheLive says whether the tracker's cache trusts its subscription.
func MarkCacheLive(t *RedisTracker) bool {
	t.cache.mu.Lock()
	defer t.cache.mu.Unlock()
	return t.cache.live
}

// IsSubscription says whether a Redis dial or command is the mark
// cache's subscription's, for tests that send it elsewhere.
func IsSubscription(ctx context.Context) bool { return ctx.Value(subConn{}) != nil }

// Instance names the monitor's row in ryw_fence_ack.
func (m *Monitor) Instance() string { return m.instance }

// Stalled reports whether the monitor takes replica name for stalled:
// behind the primary, and not moving (see Monitor.Refresh).
func Stalled(m *Monitor, name string) bool { return m.stalled(name) }

// NoWarmOnRejoin has the balancer's replicas rejoin the rotation with
// their read pools as they are, as before the pools were opened first.
func NoWarmOnRejoin(b *Balancer) { b.monitor.warmReadPools(nil) }

// HopefulDecision is the decision Router.hopeful makes: node is only
// likely to have replayed min.
func HopefulDecision(node string, min LSN) Decision {
	return Decision{Node: node, MinLSN: min, hopeful: true}
}

// SetHopefulWait sets how long a hopeful read waits on its replica, until
// the test ends.
func SetHopefulWait(t interface{ Cleanup(func()) }, d time.Duration) {
	old := hopefulWait
	hopefulWait = d
	t.Cleanup(func() { hopefulWait = old })
}

// MustSettle marks the request in ctx as one whose next read on the
// primary settles first, as a client's replica reads do.
func MustSettle(ctx context.Context) { observationFrom(ctx).mustSettle() }

// SettleQuery is the statement a read on the primary settles with.
const SettleQuery = settleQuery

// SettleQuickQuery is the settle's first look through a pooler, and
// SettleBusy tells its failure.
const SettleQuickQuery = settleQuickQuery

func SettleBusy(err error) bool { return settleBusy(err) }
