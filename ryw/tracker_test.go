package ryw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClockJumped(t *testing.T) {
	tr := &RedisTracker{logger: slog.New(slog.DiscardHandler)}
	local := time.Now()
	redis := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		name         string
		redis, local time.Duration // since the previous lookup
		want         bool
	}{
		{"first lookup", 0, 0, false},
		{"both advance alike", time.Minute, time.Minute, false},
		{"a pipeline's worth of skew", 1500 * time.Millisecond, time.Second, false},
		{"Redis's clock steps forward", 11 * time.Minute, time.Second, true},
		{"Redis's clock steps back", -time.Hour, time.Second, false},
		{"after the step, alike again", time.Second, time.Second, false},
	}
	for _, s := range steps {
		redis, local = redis.Add(s.redis), local.Add(s.local)
		if got := tr.clockJumped(redis, local); got != s.want {
			t.Errorf("%s: clockJumped = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestParseEpoch(t *testing.T) {
	id, floor, err := parseEpoch("abc123 0000000100000020 deadbeef")
	if err != nil || id != "abc123" || floor != 0x1_00000020 {
		t.Errorf("parseEpoch = %q, %s, %v", id, floor, err)
	}
	for _, bad := range []string{"", "x", "abc 12 r", "abc zzzzzzzzzzzzzzzz r", "a b c d"} {
		if _, _, err := parseEpoch(bad); err == nil {
			t.Errorf("parseEpoch(%q) accepted it", bad)
		}
	}
}

func TestQuarantineBacksOffAFlappingReplica(t *testing.T) {
	var q quarantine
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if hold := q.down(now); hold != 0 {
		t.Errorf("first failure: held %s; want it to rejoin at its next good check", hold)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		if q.held(now) {
			now = q.until
		}
		q.up(now)
		now = now.Add(3 * time.Second) // fails again soon after rejoining
		if hold := q.down(now); hold != want || !q.held(now) {
			t.Errorf("relapse %d: held %s (held now: %v); want %s", i+1, hold, q.held(now), want)
		}
	}
	now = q.until
	q.up(now)
	now = now.Add(time.Minute) // a long healthy run
	if hold := q.down(now); hold != 0 {
		t.Errorf("failure after a long healthy run: held %s; want 0", hold)
	}
}

func TestCaughtUpPassesOverASlowReplicaWhileAFastOneQualifies(t *testing.T) {
	m := NewMonitor(nil, []NodeDB{{Name: "r1"}, {Name: "r2"}, {Name: "r3"}}, time.Second, slog.New(slog.DiscardHandler))
	set := func(name string, lsn LSN, rtt time.Duration) {
		m.status[name] = ReplicaStatus{Name: name, Healthy: true, ReplayLSN: lsn, RTT: rtt}
	}
	set("r1", 100, 200*time.Millisecond) // a slow link
	set("r2", 100, time.Millisecond)
	set("r3", 50, 2*time.Millisecond)
	for _, tt := range []struct {
		min  LSN
		want string
	}{
		{0, "[r2 r3]"}, // the slow one is passed over
		{100, "[r2]"},  // the fast one qualifies
		{60, "[r2]"},   // r3 is behind
		{101, "[]"},    // none qualifies
	} {
		if got := fmt.Sprint(m.CaughtUp(tt.min)); got != tt.want {
			t.Errorf("CaughtUp(%d) = %s, want %s", tt.min, got, tt.want)
		}
	}
	set("r2", 90, time.Millisecond)
	if got := fmt.Sprint(m.CaughtUp(100)); got != "[r1]" {
		t.Errorf("only the slow replica qualifies: CaughtUp = %s, want [r1]", got)
	}
	set("r1", 100, 8*time.Millisecond) // slower, but within the margin
	set("r2", 100, time.Millisecond)
	if got := fmt.Sprint(m.CaughtUp(100)); got != "[r1 r2]" {
		t.Errorf("a replica within the margin: CaughtUp = %s, want both", got)
	}
}

func TestMayHaveCommitted(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"deadline passed after sending", fmt.Errorf("query: %w", context.DeadlineExceeded), true},
		{"connection broke after sending", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"a server error", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, false},
		{"a constraint", &pgconn.PgError{Code: "23505"}, false},
		{"a plain error", errors.New("syntax"), false},
	} {
		if got := MayHaveCommitted(tt.err); got != tt.want {
			t.Errorf("%s: MayHaveCommitted = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBreakerShedsCallsAfterRedisFailsToAnswer(t *testing.T) {
	var b breaker
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if !b.allow(now) {
		t.Fatal("a closed breaker refused a call")
	}
	b.done(errors.New("WRONGTYPE"), now) // an answer, if an error one
	if !b.allow(now) {
		t.Fatal("an error reply opened the breaker")
	}
	b.done(fmt.Errorf("pipeline: %w", context.DeadlineExceeded), now)
	if b.allow(now.Add(500 * time.Millisecond)) {
		t.Error("calls went through within the cooldown after a timeout")
	}
	later := now.Add(breakerCooldown)
	if !b.allow(later) {
		t.Fatal("no trial call after the cooldown")
	}
	if b.allow(later) {
		t.Error("a second call went through while the trial was in flight")
	}
	b.done(nil, later)
	if !b.allow(later) || !b.allow(later) {
		t.Error("a successful trial did not close the breaker")
	}
}

// A stalled replica (behind the primary, not moving for stallAfter) is not
// asked by Refresh: its DB here is nil, so asking it would panic. One that
// moved lately, or that is caught up, is not stalled.
func TestRefreshDoesNotAskAStalledReplica(t *testing.T) {
	now := t0
	m := NewMonitor(nil, []NodeDB{{Name: "paused"}, {Name: "moving"}, {Name: "idle"}}, 50*time.Millisecond, slog.New(slog.DiscardHandler))
	m.now = func() time.Time { return now }
	m.status["paused"] = ReplicaStatus{Name: "paused", Healthy: true, ReplayLSN: 100, LagBytes: 50}
	m.moved["paused"] = now.Add(-stallAfter)
	m.status["moving"] = ReplicaStatus{Name: "moving", Healthy: true, ReplayLSN: 140, LagBytes: 10}
	m.moved["moving"] = now.Add(-stallAfter + time.Millisecond)
	m.status["idle"] = ReplicaStatus{Name: "idle", Healthy: true, ReplayLSN: 150}
	m.moved["idle"] = now.Add(-time.Hour)
	if !m.stalled("paused") || m.stalled("moving") || m.stalled("idle") {
		t.Errorf("stalled: paused %v, moving %v, idle %v; want only the paused replica", m.stalled("paused"), m.stalled("moving"), m.stalled("idle"))
	}
	m.Refresh(t.Context(), []string{"paused"}) // would panic if it asked
}
