package ryw

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Mode selects how reads that must show a user's own writes are routed.
type Mode string

const (
	// ModeTime sends a user's reads to the primary for the window after the
	// user's last write, and afterwards only to replicas fresh enough.
	ModeTime Mode = "time"
	// ModeOff routes every read to a replica: it demonstrates the stale
	// reads that read-your-writes prevents.
	ModeOff Mode = "off"
)

// Replicas is what the router needs to know of the replicas: which are
// healthy and fresh enough, and how to take one out of rotation. *Monitor
// implements it.
type Replicas interface {
	// Fresh returns the healthy replicas on which every commit that
	// completed before t is visible; a zero t asks for every healthy one.
	Fresh(t time.Time) []string
	// MarkDown takes a replica out of rotation after a query on it failed.
	MarkDown(name string, cause error)
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Mode     Mode
	Window   time.Duration // how long after a write a user's reads go to the primary
	Tracker  Tracker
	Replicas Replicas
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Router makes the per-request routing decisions: it is the read-your-writes
// policy. When unsure, it reads from the primary.
type Router struct {
	cfg   RouterConfig
	local localMarks
}

// NewRouter builds a router.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Router{cfg: cfg, local: localMarks{at: map[string]time.Time{}}}
}

// Mode returns the router's mode.
func (r *Router) Mode() Mode { return r.cfg.Mode }

// ForWrite is the decision for a request that writes: the primary.
func (r *Router) ForWrite() Decision {
	return Decision{Node: Primary, Reason: ReasonWrite}
}

// ForStaleRead is the decision for a read that may be slightly stale: any
// healthy replica.
func (r *Router) ForStaleRead() Decision {
	return r.replicaOrPrimary(time.Time{}, ReasonStaleOK)
}

// ForOwnRead is the decision for a read that must show the user's own
// writes.
func (r *Router) ForOwnRead(ctx context.Context, userID string) Decision {
	if r.cfg.Mode == ModeOff {
		return r.replicaOrPrimary(time.Time{}, ReasonRYWOff)
	}
	now := r.cfg.Now()
	at, ok, err := r.cfg.Tracker.LastWrite(ctx, userID)
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "tracker unavailable; reading from the primary", "user", userID, "err", err)
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	if (ok && now.Sub(at) < r.cfg.Window) || r.local.recent(userID, now, r.cfg.Window) {
		return Decision{Node: Primary, Reason: ReasonRecentWrite}
	}
	// Outside the window a replica may serve, but only one that has
	// replayed the user's last write: every commit before `at` must be
	// visible. Without a marker, the window is the bound.
	need := now.Add(-r.cfg.Window)
	if ok && at.Before(need) {
		need = at
	}
	return r.replicaOrPrimary(need, ReasonNoRecentWrite)
}

// replicaOrPrimary picks a random replica fresh to t, else the primary.
func (r *Router) replicaOrPrimary(t time.Time, reason Reason) Decision {
	names := r.cfg.Replicas.Fresh(t)
	if len(names) == 0 {
		return Decision{Node: Primary, Reason: ReasonNoReplica}
	}
	return Decision{Node: names[rand.IntN(len(names))], Reason: reason}
}

// RecordWrite notes a committed write of the user. Call it after the
// commit and before answering. If the tracker fails, this instance still
// sends the user's reads to the primary for the window, and the error is
// returned for the caller to log: the write itself succeeded.
func (r *Router) RecordWrite(ctx context.Context, userID string) error {
	now := r.cfg.Now()
	if err := r.cfg.Tracker.RecordWrite(ctx, userID, now); err != nil {
		r.local.mark(userID, now, r.cfg.Window)
		return err
	}
	return nil
}

// Read runs read with the decision in ctx. If it fails on a replica because
// the replica is unreachable, restarting, or cancelled the query in a
// replay conflict, the replica is taken out of rotation and read runs once
// more, on the primary: the request is answered, not failed.
func (r *Router) Read(ctx context.Context, read func(context.Context) error) error {
	err := read(ctx)
	d, ok := DecisionFrom(ctx)
	if err == nil || !ok || d.OnPrimary() || !(IsUnavailable(err) || isRecoveryConflict(err)) {
		return err
	}
	r.cfg.Replicas.MarkDown(d.Node, err)
	r.cfg.Logger.WarnContext(ctx, "read failed on a replica; retrying on the primary", "replica", d.Node, "err", err)
	observationFrom(ctx).setReason(ReasonReplicaFailed)
	if err := read(WithDecision(ctx, Decision{Node: Primary, Reason: ReasonReplicaFailed})); err != nil {
		return fmt.Errorf("retry on the primary after %s failed: %w", d.Node, err)
	}
	return nil
}

// localMarks remembers, in this instance only, the users whose write could
// not be recorded in the tracker, for the window.
type localMarks struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (l *localMarks) mark(user string, at time.Time, window time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at[user] = at
	if len(l.at) > 10_000 {
		for u, t := range l.at {
			if at.Sub(t) >= window {
				delete(l.at, u)
			}
		}
	}
}

func (l *localMarks) recent(user string, now time.Time, window time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[user]
	if ok && now.Sub(t) >= window {
		delete(l.at, user)
		return false
	}
	return ok
}
