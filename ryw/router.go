package ryw

import (
	"context"
	"errors"
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
	// user's last write, and afterwards only to replicas that have replayed
	// everything committed before that write.
	ModeTime Mode = "time"
	// ModeLSN sends a user's reads to any replica that has replayed the
	// user's last write, identified by its WAL position (the causal token).
	ModeLSN Mode = "lsn"
	// ModeOff routes every read to a replica: it demonstrates the stale
	// reads that read-your-writes prevents.
	ModeOff Mode = "off"
)

// Replicas is what the router needs to know of the replicas. *Monitor
// implements it.
type Replicas interface {
	// CaughtUp returns the healthy replicas known to have replayed min.
	CaughtUp(min LSN) []string
	// RequiredLSN returns a position at or past every commit that
	// completed before t; ok is false if none is known yet.
	RequiredLSN(t time.Time) (lsn LSN, ok bool)
	// Refresh asks the named replicas for their position now.
	Refresh(ctx context.Context, names []string)
	// MarkDown takes a replica out of rotation after a query on it failed.
	MarkDown(name string, cause error)
	// Behind lowers a replica's known position to what a connection saw.
	Behind(name string, lsn LSN)
}

// WAL reads the primary's current WAL position: the causal token of a write
// that has just committed. PrimaryWAL implements it.
type WAL interface {
	CurrentLSN(ctx context.Context) (LSN, error)
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Mode   Mode
	Window time.Duration // time mode: how long after a write a user's reads go to the primary
	// MaxWait is how long an lsn-mode read may wait for a replica to replay
	// the user's token before it goes to the primary (0: not at all).
	MaxWait  time.Duration
	Tracker  Tracker
	Replicas Replicas
	WAL      WAL // required in lsn mode
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Router makes the per-request routing decisions: it is the read-your-writes
// policy. When unsure, it reads from the primary.
type Router struct {
	cfg    RouterConfig
	local  localMarks
	counts Counters
}

// NewRouter builds a router.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Router{cfg: cfg, local: localMarks{marks: map[string]localMark{}}, counts: newCounters()}
}

// Mode returns the router's mode.
func (r *Router) Mode() Mode { return r.cfg.Mode }

// Counts returns how many decisions were made, by reason and by node.
func (r *Router) Counts() CountsSnapshot { return r.counts.snapshot() }

// ForWrite is the decision for a request that writes: the primary.
func (r *Router) ForWrite() Decision {
	return r.counted(Decision{Node: Primary, Reason: ReasonWrite})
}

// ForStaleRead is the decision for a read that may be slightly stale: any
// healthy replica.
func (r *Router) ForStaleRead() Decision {
	return r.counted(r.replicaOrPrimary(0, ReasonStaleOK))
}

// ForOwnRead is the decision for a read that must show the user's own
// writes.
func (r *Router) ForOwnRead(ctx context.Context, userID string) Decision {
	switch r.cfg.Mode {
	case ModeOff:
		return r.counted(r.replicaOrPrimary(0, ReasonRYWOff))
	case ModeLSN:
		return r.counted(r.lsnRead(ctx, userID))
	default:
		return r.counted(r.timeRead(ctx, userID))
	}
}

func (r *Router) timeRead(ctx context.Context, userID string) Decision {
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
	// replayed every commit before the user's last write (or, without a
	// marker, before the window): one lagging more than that is skipped.
	need := now.Add(-r.cfg.Window)
	if ok && at.Before(need) {
		need = at
	}
	min, known := r.cfg.Replicas.RequiredLSN(need)
	if !known {
		return Decision{Node: Primary, Reason: ReasonNoReplica}
	}
	return r.replicaOrPrimary(min, ReasonNoRecentWrite)
}

func (r *Router) lsnRead(ctx context.Context, userID string) Decision {
	token := clientToken(ctx)
	stored, _, err := r.cfg.Tracker.LastLSN(ctx, userID)
	if err != nil {
		if token == 0 {
			r.cfg.Logger.WarnContext(ctx, "tracker unavailable and no client token; reading from the primary", "user", userID, "err", err)
			return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
		}
		// The client's own token still holds its writes: route by it.
		r.cfg.Logger.DebugContext(ctx, "tracker unavailable; routing by the client's token", "user", userID, "err", err)
	}
	token = max(token, stored, r.local.lsn(userID, r.cfg.Now()))
	if token == 0 {
		return r.replicaOrPrimary(0, ReasonNoToken)
	}
	if d, ok := r.pick(token, ReasonLSNCaughtUp); ok {
		return d
	}
	// The known positions are behind the token; they may only be stale.
	// Ask the healthy replicas directly, and keep asking until MaxWait.
	deadline := r.cfg.Now().Add(r.cfg.MaxWait)
	for {
		r.cfg.Replicas.Refresh(ctx, r.cfg.Replicas.CaughtUp(0))
		if d, ok := r.pick(token, ReasonLSNCaughtUp); ok {
			return d
		}
		left := deadline.Sub(r.cfg.Now())
		if left <= 0 || ctx.Err() != nil {
			return Decision{Node: Primary, Reason: ReasonReplicasBehind}
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(left, 2*time.Millisecond)):
		}
	}
}

// pick chooses a random healthy replica known to have replayed min; ok is
// false when there is none.
func (r *Router) pick(min LSN, reason Reason) (d Decision, ok bool) {
	names := r.cfg.Replicas.CaughtUp(min)
	if len(names) == 0 {
		return Decision{}, false
	}
	return Decision{Node: names[rand.IntN(len(names))], Reason: reason, MinLSN: min}, true
}

// replicaOrPrimary picks a replica that has replayed min, else the primary.
func (r *Router) replicaOrPrimary(min LSN, reason Reason) Decision {
	if d, ok := r.pick(min, reason); ok {
		return d
	}
	return Decision{Node: Primary, Reason: ReasonNoReplica}
}

func (r *Router) counted(d Decision) Decision {
	r.counts.add(d)
	return d
}

// RecordWrite notes a committed write of the user. Call it after the
// commit and before answering. In lsn mode it takes the primary's WAL
// position as the write's causal token, stores it (only ever rising) and
// puts it in the request's Observation, for the client. If the tracker
// fails, this instance still routes the user's reads as if it had
// succeeded, and the error is returned for the caller to log: the write
// itself succeeded.
func (r *Router) RecordWrite(ctx context.Context, userID string) error {
	now := r.cfg.Now()
	if r.cfg.Mode != ModeLSN {
		if err := r.cfg.Tracker.RecordWrite(ctx, userID, now); err != nil {
			r.local.mark(userID, localMark{at: now}, now, r.cfg.Window)
			return err
		}
		return nil
	}
	token, err := r.cfg.WAL.CurrentLSN(ctx)
	if err != nil {
		// No token: keep the user on the primary here for a while.
		r.local.mark(userID, localMark{at: now, unknown: true}, now, r.cfg.Window)
		return fmt.Errorf("read the write's WAL position: %w", err)
	}
	observationFrom(ctx).setToken(token)
	if err := r.cfg.Tracker.RecordLSN(ctx, userID, token); err != nil {
		r.local.mark(userID, localMark{at: now, lsn: token}, now, r.cfg.Window)
		return err
	}
	return nil
}

// Read runs read with the decision in ctx. If it fails on a replica because
// the replica is unreachable, restarting, cancelled the query in a replay
// conflict, or turned out behind the read's MinLSN, the replica is taken out
// of rotation (or its position lowered) and read runs once more, on the
// primary: the request is answered, not failed.
func (r *Router) Read(ctx context.Context, read func(context.Context) error) error {
	err := read(ctx)
	d, ok := DecisionFrom(ctx)
	if err == nil || !ok || d.OnPrimary() || ctx.Err() != nil {
		// A request that was cancelled or timed out says nothing about the
		// replica.
		return err
	}
	reason := ReasonReplicaFailed
	var behind *BehindError
	switch {
	case errors.As(err, &behind):
		r.cfg.Replicas.Behind(d.Node, behind.Replayed)
		reason = ReasonReplicaBehind
	case IsUnavailable(err) || isRecoveryConflict(err):
		r.cfg.Replicas.MarkDown(d.Node, err)
	default:
		return err
	}
	r.cfg.Logger.WarnContext(ctx, "read failed on a replica; retrying on the primary", "replica", d.Node, "err", err)
	observationFrom(ctx).setReason(reason)
	r.counts.add(Decision{Node: Primary, Reason: reason})
	if err := read(WithDecision(ctx, Decision{Node: Primary, Reason: reason})); err != nil {
		return fmt.Errorf("retry on the primary after %s failed: %w", d.Node, err)
	}
	return nil
}

// localMarks remembers, in this instance only, the users whose write could
// not be recorded in the tracker, for the window.
type localMarks struct {
	mu    sync.Mutex
	marks map[string]localMark
}

type localMark struct {
	at      time.Time
	lsn     LSN  // lsn mode: the write's token
	unknown bool // lsn mode: the token could not be read
}

func (l *localMarks) mark(user string, m localMark, now time.Time, window time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.marks[user]; ok && old.lsn > m.lsn {
		m.lsn = old.lsn
	}
	l.marks[user] = m
	if len(l.marks) > 10_000 {
		for u, m := range l.marks {
			if now.Sub(m.at) >= window {
				delete(l.marks, u)
			}
		}
	}
}

// recent reports a mark younger than window (time mode).
func (l *localMarks) recent(user string, now time.Time, window time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.marks[user]
	if ok && now.Sub(m.at) >= window {
		delete(l.marks, user)
		return false
	}
	return ok
}

// lsn returns the user's local token (lsn mode). A write whose token could
// not be read counts as a token no replica has reached, so that the user's
// reads go to the primary.
func (l *localMarks) lsn(user string, now time.Time) LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.marks[user]
	if !ok {
		return 0
	}
	if m.unknown && now.Sub(m.at) < localUnknownHold {
		return ^LSN(0)
	}
	return m.lsn
}

// localUnknownHold is how long a write without a token keeps its user on
// the primary in lsn mode.
const localUnknownHold = 10 * time.Second
