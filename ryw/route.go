package ryw

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"time"
)

// ForWrite is the decision for a request that writes: the primary. The
// client's session is judged, so that its response carries on what holds.
func (r *Router) ForWrite(ctx context.Context) Decision {
	r.session(ctx, false)
	// Where the primary was before the write: a lower bound of its commit.
	observationFrom(ctx).setWriteLow(r.cfg.View.PrimaryPosition())
	return r.counted(Decision{Node: Primary, Reason: ReasonWrite})
}

// ForStaleRead is the decision for a read that may be slightly stale: any
// healthy replica, or with the session floor on, any healthy replica at or
// past what the client's reads have already shown it.
func (r *Router) ForStaleRead(ctx context.Context) Decision {
	if !r.cfg.StaleReadsWithoutPrimary && !r.primaryConfirmed() {
		d := Decision{Node: Primary, Reason: ReasonFenceUnknown}
		if r.cfg.Monotonic && r.cfg.Mode != ModeOff {
			r.session(ctx, false)
			d = r.measured(d)
		}
		return r.counted(d)
	}
	if !r.cfg.Monotonic || r.cfg.Mode == ModeOff {
		return r.counted(r.replicaOrPrimary(0, ReasonStaleOK))
	}
	return r.counted(r.measured(r.staleRead(ctx)))
}

// primaryConfirmed reports whether a poll of the primary, which read its
// timeline and fence, started within the fence lease: until one has, no
// replica is known to be on the primary's history.
func (r *Router) primaryConfirmed() bool {
	_, asOf := r.cfg.View.Fence()
	return !asOf.IsZero() && r.cfg.Now().Sub(asOf) < r.cfg.FenceLease
}

func (r *Router) staleRead(ctx context.Context) Decision {
	_, seen, why := r.session(ctx, false)
	if why != "" {
		return Decision{Node: Primary, Reason: why}
	}
	if pin := observationFrom(ctx).kept().Pin; pin != 0 {
		// The replica the client reads from serves it again, at any
		// position: while it runs, it never shows less than it showed.
		if name, ok := r.pinnedReplica(pin); ok {
			return Decision{Node: name, Reason: ReasonStaleOK, Pin: pin}
		}
		return Decision{Node: Primary, Reason: ReasonSessionMoved}
	}
	if d, ok := r.pick(seen, ReasonStaleOK); ok {
		return d
	}
	if len(r.cfg.View.CaughtUp(0)) == 0 {
		return Decision{Node: Primary, Reason: ReasonNoReplica}
	}
	// The known positions may only be stale (the floor came from another
	// instance's read): ask the replicas, once, or up to MaxWait in lsn
	// mode.
	if d, ok := r.waitFor(ctx, seen, ReasonStaleOK); ok {
		return d
	}
	return Decision{Node: Primary, Reason: ReasonSessionFloor}
}

// measured makes a read decision report its position, for the session
// floor.
func (r *Router) measured(d Decision) Decision {
	d.MeasureSeen = true
	return d
}

// ForOwnRead is the decision for a read that must show the user's own
// writes.
func (r *Router) ForOwnRead(ctx context.Context, userID string) Decision {
	if r.cfg.Mode == ModeOff {
		return r.forUncheckedRead()
	}
	d := r.ownRead(ctx, userID)
	if r.cfg.Monotonic {
		d = r.measured(d)
	}
	return r.counted(d)
}

// forUncheckedRead is the decision ModeOff makes for a read that must show
// the user's own writes: any replica, whatever the user wrote (see
// UncheckedRead).
func (r *Router) forUncheckedRead() Decision {
	return r.counted(r.replicaOrPrimary(0, ReasonRYWOff))
}

// ownRead routes a read that must show the user's writes. Whatever the
// mode, a replica serves it only if it has replayed the highest of:
//
//   - the user's token, from the tracker or sent back by the client;
//   - the tracker's floor, after Redis lost its state;
//   - the primary's fence, raised by writes the tracker could not record,
//     as confirmed by a poll of the primary within the fence lease;
//   - where the primary was MarkerTTL ago (less a tenth): marks expire
//     after that long, so no replica further behind may serve, marks or
//     not.
//
// Time mode also sends the user to the primary for Window after a
// write, judged on the tracker's clock alone. When the tracker cannot say
// what the user wrote, see unknownWrites.
func (r *Router) ownRead(ctx context.Context, userID string) Decision {
	// Only time mode's window needs the time of the write: lsn mode reads
	// the token alone (see docs/CONSISTENCY.md, "What a lookup reads").
	withTime := r.cfg.Mode == ModeTime
	// Any position the primary is asked for from now on covers every write
	// acknowledged before the read arrived (see unknownWrites).
	arrived := r.asked.Load()
	marks, err := r.cfg.Tracker.Lookup(ctx, userID, withTime)
	unknown := ""
	switch {
	case err != nil:
		unknown = "tracker unavailable"
	case marks.Unreliable && (marks.Token.IsZero() || (withTime && marks.WrittenAt.IsZero())):
		// Redis may have evicted the user's marks, or one of those read.
		unknown = "marks may have been evicted"
	}
	var toPrimary Reason
	var token LSN
	if unknown == "" && !marks.Token.IsZero() {
		switch p, v := r.cfg.View.Cluster().Judge(marks.Token); v {
		case Current:
			token = p.LSN
		case Lost:
			r.lostMark(ctx, userID, marks.Token, p)
			toPrimary = ReasonWriteLost
		case Foreign:
			unknown = "the mark is of another cluster"
		case Unjudged:
			toPrimary = ReasonTimelineUnknown
		}
	}
	if unknown != "" {
		// The session is kept for the next token; the primary's position
		// now, which unknownWrites reads at, is past all of it.
		r.session(ctx, false)
		return r.unknownWrites(ctx, arrived, userID, unknown, err)
	}
	write, seen, why := r.session(ctx, true)
	if toPrimary = cmp.Or(toPrimary, why); toPrimary != "" {
		return Decision{Node: Primary, Reason: toPrimary}
	}
	if r.cfg.Mode == ModeTime && marks.HasWrite() && (marks.Age < r.cfg.Window || marks.Token.IsZero()) {
		return Decision{Node: Primary, Reason: ReasonRecentWrite}
	}
	// The client may know of a later write than Redis does.
	token = max(token, write)
	reason := ReasonNoRecentWrite
	if r.cfg.Mode == ModeLSN {
		reason = ReasonLSNCaughtUp
		if token == 0 {
			reason = ReasonNoToken
		}
	}
	if pin := observationFrom(ctx).kept().Pin; pin != 0 {
		return r.pinnedRead(token, seen, marks.Floor, pin, reason)
	}
	return r.replicaPast(ctx, max(token, seen), marks.Floor, reason)
}

// pinnedRead routes an own-write read of a session pinned to the replica
// run pin: to that replica, which must have replayed the user's writes
// and the own-read floors (its connection checks), but not the session's
// floor, since it never shows less than it showed the client. If it turns
// out behind, another replica that has replayed both serves (see Read); if
// it restarted or left rotation, the primary.
func (r *Router) pinnedRead(token, seen, floor LSN, pin Incarnation, reason Reason) Decision {
	need, ok := r.ownReadFloor(token, floor)
	if !ok {
		return Decision{Node: Primary, Reason: ReasonFenceUnknown}
	}
	name, ok := r.pinnedReplica(pin)
	if !ok {
		return Decision{Node: Primary, Reason: ReasonSessionMoved}
	}
	return Decision{Node: name, Reason: reason, MinLSN: need, Pin: pin, moveAt: max(need, seen)}
}

// pinnedReplica returns the replica whose current run is pin, if it is in
// rotation.
func (r *Router) pinnedReplica(pin Incarnation) (string, bool) {
	name := ""
	r.runs.Range(func(k, v any) bool {
		if v.(Incarnation) == pin {
			name = k.(string)
			return false
		}
		return true
	})
	if name == "" || !slices.Contains(r.cfg.View.CaughtUp(0), name) {
		return "", false
	}
	return name, true
}

// learnRun records the incarnation a read found replica name in.
func (r *Router) learnRun(name string, inc Incarnation) {
	if v, ok := r.runs.Load(name); !ok || v.(Incarnation) != inc {
		r.runs.Store(name, inc)
	}
}

// unknownWrites routes an own-write read when the user's writes are not
// known (Redis failed, or may have lost the user's marks): to the primary,
// when unsure, in every mode. With UnknownWritesOnReplicas, lsn mode reads
// from a replica that has replayed everything the primary had written when
// the read arrived (arrived: r.asked as read then), which covers every
// write acknowledged before it, from any device, without Redis; that costs
// the primary one position query, shared by the reads that arrived before
// it was sent, and none when one was sent after the read arrived (while it
// asked Redis, say).
func (r *Router) unknownWrites(ctx context.Context, arrived uint64, userID, why string, cause error) Decision {
	if r.cfg.Mode != ModeLSN || !r.cfg.UnknownWritesOnReplicas {
		r.warnUnknown(ctx, "user's writes unknown; reading from the primary", userID, why, cause)
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	if r.cfg.MaxWait == 0 && r.cfg.CheckedReplicas && len(r.cfg.View.Following()) == 0 &&
		len(r.cfg.View.CaughtUp(r.cfg.View.PrimaryLSN())) == 0 {
		// No replica could serve it: none keeps up, to be hoped for, and
		// none is known past where the primary was at its last poll, which
		// the position to ask is at or past. The primary serves, unasked.
		if len(r.cfg.View.CaughtUp(0)) == 0 {
			return Decision{Node: Primary, Reason: ReasonNoReplica}
		}
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	// The primary's position as read after the request arrived: concurrent
	// reads share the query (see askAfter).
	now, err := askAfter(ctx, r, &r.nowPositions, "", arrived, &r.lastNow, r.cfg.WAL.CurrentLSN)
	if err != nil {
		r.warnUnknown(ctx, "user's writes and the primary's position unknown; reading from the primary", userID, why, cause)
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	r.cfg.Logger.DebugContext(ctx, "user's writes unknown; reading from a replica at the primary's position", "user", userID, "why", why, "err", cause)
	return r.replicaPast(ctx, now, 0, ReasonTrackerUnavailable)
}

// unknownWarnEvery is how often a read of unknown writes logs a warning:
// through a Redis outage, or with a Redis that evicts marks, every own
// read is one, and a warning each would flood the log.
const unknownWarnEvery = 10 * time.Second

// warnUnknown logs msg about a read of unknown writes: as a warning for
// the first in unknownWarnEvery, at debug level for the others.
func (r *Router) warnUnknown(ctx context.Context, msg, userID, why string, cause error) {
	warned := false
	r.unknownWarn.Do(func() {
		warned = true
		r.cfg.Logger.WarnContext(ctx, msg, "user", userID, "why", why, "err", cause,
			"others", "logged at debug level for "+unknownWarnEvery.String())
	})
	if !warned {
		r.cfg.Logger.DebugContext(ctx, msg, "user", userID, "why", why, "err", cause)
	}
}

// replicaPast picks a replica that has replayed token, floor and the
// own-read floors (see ownReadFloor); in lsn mode it waits up to MaxWait
// for one; else the primary.
func (r *Router) replicaPast(ctx context.Context, token, floor LSN, reason Reason) Decision {
	need, ok := r.ownReadFloor(token, floor)
	if !ok {
		return Decision{Node: Primary, Reason: ReasonFenceUnknown}
	}
	if d, ok := r.pick(need, reason); ok {
		return d
	}
	if r.cfg.Mode == ModeLSN {
		if r.cfg.MaxWait == 0 && r.cfg.CheckedReplicas {
			if d, ok := r.hopeful(need, reason); ok {
				return d
			}
		} else if d, ok := r.waitFor(ctx, need, reason); ok {
			return d
		}
	}
	if len(r.cfg.View.CaughtUp(0)) == 0 {
		return Decision{Node: Primary, Reason: ReasonNoReplica}
	}
	if reason == ReasonTrackerUnavailable {
		return Decision{Node: Primary, Reason: reason}
	}
	return Decision{Node: Primary, Reason: ReasonReplicasBehind}
}

// ownReadFloor returns what a replica must have replayed to serve an
// own-write read of a user with token and tracker floor; ok is false when
// the fence cannot be vouched for (no poll of the primary within the
// lease), and the read must go to the primary.
func (r *Router) ownReadFloor(token, floor LSN) (need LSN, ok bool) {
	now := r.cfg.Now()
	fence, asOf := r.cfg.View.Fence()
	if asOf.IsZero() || now.Sub(asOf) >= r.cfg.FenceLease {
		return 0, false
	}
	bound, ok := r.cfg.View.RequiredLSN(now.Add(-r.cfg.MarkerTTL * 9 / 10))
	if !ok {
		return 0, false
	}
	return max(token, floor, fence, bound), true
}

// waitFor asks the healthy replicas for their position directly, since
// the known ones may only be stale, and keeps asking until MaxWait. The
// replicas are asked at once, and the first that qualifies serves: a slow
// replica delays nobody whom a fast one can serve.
func (r *Router) waitFor(ctx context.Context, need LSN, reason Reason) (Decision, bool) {
	deadline := r.cfg.Now().Add(r.cfg.MaxWait)
	// A replica that hangs must not hold the read: each round of asking
	// ends by MaxWait, or after refreshGrace when MaxWait is shorter.
	wctx, cancel := context.WithTimeout(ctx, max(r.cfg.MaxWait, refreshGrace))
	defer cancel()
	for {
		names := r.cfg.View.CaughtUp(0)
		answered := make(chan struct{}, len(names))
		for _, n := range names {
			go func() {
				r.cfg.View.Refresh(wctx, []string{n})
				answered <- struct{}{}
			}()
		}
		for range names {
			select {
			case <-answered:
			case <-wctx.Done():
				return Decision{}, false
			}
			if d, ok := r.pick(need, reason); ok {
				return d, true
			}
		}
		left := deadline.Sub(r.cfg.Now())
		if left <= 0 || ctx.Err() != nil {
			return Decision{}, false
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(left, 2*time.Millisecond)):
		}
	}
}

// hopeful sends a read that no replica is known to have replayed need for
// to a replica that keeps up with the primary (see ClusterView.Following),
// where need was written a moment ago: the connection checks the
// replica's position before the query runs, which asks the replica as a
// Refresh would, in the round trip the read needs anyway. If it turns out
// behind, another that keeps up is tried once, then the primary (see
// Read).
func (r *Router) hopeful(need LSN, reason Reason) (Decision, bool) {
	names := r.cfg.View.Following()
	if len(names) == 0 {
		return Decision{}, false
	}
	return Decision{Node: names[rand.IntN(len(names))], Reason: reason, MinLSN: need, hopeful: true}, true
}

// missReason is why a hopeful read whose replicas were behind ends on the
// primary: the reason it would have had if no replica had been tried (see
// replicaPast). A read whose user's writes were unknown stays
// tracker-unavailable.
func (d Decision) missReason() Reason {
	if d.Reason == ReasonTrackerUnavailable {
		return d.Reason
	}
	return ReasonReplicasBehind
}

// refreshGrace bounds how long a read with a short MaxWait (or none)
// waits for the replicas to tell their positions: a healthy replica
// answers in well under it.
const refreshGrace = 50 * time.Millisecond

// pick chooses a random healthy replica known to have replayed min; ok is
// false when there is none.
func (r *Router) pick(min LSN, reason Reason) (d Decision, ok bool) {
	names := r.cfg.View.CaughtUp(min)
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
