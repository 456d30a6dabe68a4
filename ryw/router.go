package ryw

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/sync/singleflight"
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

// Replicas is what the router needs to know of the replicas and of the
// primary's fence. *Monitor implements it.
type Replicas interface {
	// CaughtUp returns the healthy replicas known to have replayed min.
	CaughtUp(min LSN) []string
	// AllCaughtUp reports whether every replica is healthy and known to
	// have replayed min.
	AllCaughtUp(min LSN) bool
	// RequiredLSN returns a position at or past every commit that
	// completed before t; ok is false if none is known yet.
	RequiredLSN(t time.Time) (lsn LSN, ok bool)
	// PrimaryLSN returns the primary's position at its last poll.
	PrimaryLSN() LSN
	// PrimaryPosition is PrimaryLSN with its timeline, read together.
	PrimaryPosition() Position
	// Fence returns the primary's fence and when the poll that read it
	// started (zero if none has).
	Fence() (fence LSN, asOf time.Time)
	// Refresh asks the named replicas for their position now.
	Refresh(ctx context.Context, names []string)
	// MarkDown takes a replica out of rotation after a query on it failed.
	MarkDown(name string, cause error)
	// Behind lowers a replica's known position to what a connection saw.
	Behind(name string, lsn LSN)
	// Saw raises a replica's known position to what a measured read on it
	// found, in a read that started at at.
	Saw(name string, pos Position, at time.Time)
	// Cluster returns the primary's system identifier, timeline and
	// timeline history, as last seen.
	Cluster() Cluster
}

// WAL is the router's view of the primary's write-ahead log. PrimaryWAL
// implements it.
type WAL interface {
	// CurrentLSN returns a position at or past every commit that has
	// returned: the causal token of a write that has just committed.
	CurrentLSN(ctx context.Context) (LSN, error)
	// CurrentPosition is CurrentLSN with the primary's system identifier
	// and timeline, the causal token of a write as tokens and marks carry
	// it, and the server it was read on ("" if unknown).
	CurrentPosition(ctx context.Context) (pos Position, server string, err error)
	// History returns where each ancestor of timeline ended, from the
	// primary's timeline history file.
	History(ctx context.Context, timeline int) (map[int]LSN, error)
	// RaiseFence raises the position every own-write read must see.
	RaiseFence(ctx context.Context, lsn LSN) error
}

// ErrUnconfirmed means a write committed, but neither the tracker nor the
// fence could record it, and the replicas had not all replayed it in time:
// another instance could still serve the user a read without it. The
// client should be told, not answered as if all were well.
var ErrUnconfirmed = errors.New("the write committed, but read-your-writes could not be secured for it")

// RouterConfig configures a Router.
type RouterConfig struct {
	Mode   Mode
	Window time.Duration // time mode: how long after a write a user's reads go to the primary
	// MarkerTTL is how long the tracker keeps a user's marks. A replica
	// further behind than that never serves an own-write read, marks or
	// not: a user without marks may have written just before they expired.
	MarkerTTL time.Duration
	// MaxWait is how long an lsn-mode read may wait for a replica to replay
	// the user's token before it goes to the primary (0: not at all).
	MaxWait time.Duration
	// StaleReadsWithoutPrimary lets replicas serve stale-ok reads while the
	// primary has not answered within the fence lease (a primary outage,
	// before a failover is seen). Off, such reads go to the primary (503
	// while it is down): a replica that a failover leaves diverged would
	// otherwise show writes the promotion lost, and the session floors of
	// its clients would then be lost too.
	StaleReadsWithoutPrimary bool
	// Monotonic turns on the session floor (monotonic reads): every read
	// reports the highest position its data may reflect, the client's token
	// carries it, and the client's next read, own-write or stale-ok, is
	// served only at or past it.
	Monotonic bool
	Tracker   Tracker
	Replicas  Replicas
	WAL       WAL
	// FenceLease is how long after a successful poll of the primary an
	// instance trusts the fence it read (default DefaultFenceLease). A
	// write whose marks could not be recorded raises the fence and waits
	// out the lease before it is answered, so that every instance knows of
	// it by then: every instance must use the same lease.
	FenceLease time.Duration
	// RecordBudget bounds how long recording a write may take, retries,
	// fence and lease included (default, and at least: enough for every
	// tracker attempt and the lease, plus a second).
	RecordBudget time.Duration
	// ReplicaTimeout bounds each read on a replica (default 1 s): one that
	// overruns takes the replica out of rotation and is retried on the
	// primary, so a hung replica costs a request at most this much.
	ReplicaTimeout time.Duration
	// PrimaryTimeout bounds each read or write on the primary (default 5 s).
	PrimaryTimeout time.Duration
	Logger         *slog.Logger
	// Now is the clock (default time.Now). It is only ever compared with
	// itself.
	Now func() time.Time
}

// Defaults of RouterConfig.
const (
	DefaultFenceLease     = time.Second
	DefaultMarkerTTL      = 10 * time.Minute
	DefaultReplicaTimeout = time.Second
	DefaultPrimaryTimeout = 5 * time.Second
	// recordAttempts is how many times a tracker write is tried.
	recordAttempts = 3
)

// Router makes the per-request routing decisions: it is the read-your-writes
// policy. When unsure, it reads from the primary.
type Router struct {
	cfg       RouterConfig
	counts    Counters
	positions singleflight.Group // the primary's position, asked once for many requests
}

// NewRouter builds a router.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FenceLease <= 0 {
		cfg.FenceLease = DefaultFenceLease
	}
	if cfg.MarkerTTL <= 0 {
		cfg.MarkerTTL = DefaultMarkerTTL
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.PrimaryTimeout <= 0 {
		cfg.PrimaryTimeout = DefaultPrimaryTimeout
	}
	// Every tracker attempt may take its whole timeout, and the fence its
	// lease: a budget shorter than that would fail writes it could secure.
	cfg.RecordBudget = max(cfg.RecordBudget, recordAttempts*DefaultTrackerTimeout+cfg.FenceLease*11/10+time.Second)
	return &Router{cfg: cfg, counts: newCounters()}
}

// Mode returns the router's mode.
func (r *Router) Mode() Mode { return r.cfg.Mode }

// Counts returns how many decisions were made, by reason and by node.
func (r *Router) Counts() CountsSnapshot { return r.counts.snapshot() }

// IgnoreToken counts a client token that is not routed on, and why
// (TokenBadSignature, TokenAhead).
func (r *Router) IgnoreToken(why string) { r.counts.ignore(why) }

// vetClientToken returns the client's token, or 0 if it is above any
// position the primary has reached: such a token was not issued by this
// cluster, and routing on it would pin the user's reads to the primary or
// make them wait. A token newer than the monitor's last poll (a write since)
// is checked against the primary itself, once for all the requests that
// need it at the same time.
func (r *Router) vetClientToken(ctx context.Context, token LSN) LSN {
	if token <= r.cfg.Replicas.PrimaryLSN() {
		return token
	}
	arrived := time.Now()
	res, err, _ := r.positions.Do("", func() (any, error) { return r.primaryPosition(ctx) })
	pos, _ := res.(position)
	if err == nil && pos.asked.Before(arrived) && token > pos.lsn {
		// That answer was asked for before this request arrived, perhaps
		// before the client's write committed: ask again, for this token.
		pos, err = r.primaryPosition(ctx)
	}
	if err != nil {
		// Nothing to judge by: the signature held, so route on it.
		return token
	}
	if token <= pos.lsn {
		return token
	}
	r.counts.ignore(TokenAhead)
	r.cfg.Logger.DebugContext(ctx, "client token ahead of the primary; ignored", "token", token.String(), "primary", pos.lsn.String())
	return 0
}

// position is the primary's WAL position and when it was asked for.
type position struct {
	lsn   LSN
	asked time.Time
}

func (r *Router) primaryPosition(ctx context.Context) (position, error) {
	p := position{asked: time.Now()}
	err := r.Primary(context.WithoutCancel(ctx), func(ctx context.Context) (err error) {
		p.lsn, err = r.cfg.WAL.CurrentLSN(ctx)
		return err
	})
	return p, err
}

// ForWrite is the decision for a request that writes: the primary. The
// client's session is judged, so that its response carries on what holds.
func (r *Router) ForWrite(ctx context.Context) Decision {
	r.session(ctx, false)
	// Where the primary was before the write: a lower bound of its commit.
	observationFrom(ctx).setWriteLow(r.cfg.Replicas.PrimaryPosition())
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
	_, asOf := r.cfg.Replicas.Fence()
	return !asOf.IsZero() && r.cfg.Now().Sub(asOf) < r.cfg.FenceLease
}

func (r *Router) staleRead(ctx context.Context) Decision {
	_, seen, why := r.session(ctx, false)
	if why != "" {
		return Decision{Node: Primary, Reason: why}
	}
	if d, ok := r.pick(seen, ReasonStaleOK); ok {
		return d
	}
	if len(r.cfg.Replicas.CaughtUp(0)) == 0 {
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

// session judges the session the client sent back against the cluster's
// history, and keeps what holds in the request's Observation for the next
// token. It returns the client's write and seen floors on the current
// timeline (0 for none), or a reason to read from the primary. For an own
// read (own): the client's write was lost in a failover (counted,
// LostInToken), or its timeline cannot be placed (newer than this instance
// knows, or the history is unreadable; the primary's answer, measured,
// then stands in for it in the next token). For any read: what the
// client has seen was lost (SessionLost), or cannot be placed.
func (r *Router) session(ctx context.Context, own bool) (write, seen LSN, toPrimary Reason) {
	s := clientSession(ctx)
	if s.IsZero() {
		return 0, 0, ""
	}
	c := r.cfg.Replicas.Cluster()
	var kept Session
	if !s.Write.IsZero() {
		switch p, v := c.Judge(s.Write); v {
		case Current:
			if write = r.vetClientToken(ctx, p.LSN); write > 0 {
				kept.Write = p
			}
		case Lost:
			kept.Write = p
			if own {
				r.counts.lostWrite(LostInToken, CertainlyLost(s.Write, p))
				r.cfg.Logger.WarnContext(ctx, "a client's token names a write past the switch point of a failover: lost; reading from the primary",
					"token", s.Write.String(), "switchPoint", p.String())
				toPrimary = ReasonWriteLost
			}
		case Foreign:
			r.counts.ignore(TokenForeign)
		case Unjudged:
			if own {
				toPrimary = ReasonTimelineUnknown
			} else {
				kept.Write = s.Write
			}
		}
	}
	if r.cfg.Monotonic && !s.Seen.IsZero() {
		switch p, v := c.Judge(s.Seen); v {
		case Current:
			// Not vetted against the primary's position, as a write is: a
			// signed floor is one this cluster gave, and one above the
			// primary's (a replica's position taken on a timeline a failover
			// left, past its switch point) must err high, not be dropped.
			seen, kept.Seen = p.LSN, p
		case Lost:
			// The client was shown data that the failover lost: no node
			// has it any more. The best that holds is the switch point.
			r.counts.session(SessionLost)
			kept.Seen = p
			toPrimary = cmp.Or(toPrimary, ReasonSessionLost)
		case Foreign:
			r.counts.ignore(TokenForeign)
		case Unjudged:
			// Kept until the primary's answer, measured, passes it.
			kept.Seen = s.Seen
			toPrimary = cmp.Or(toPrimary, ReasonTimelineUnknown)
		}
	}
	observationFrom(ctx).setKept(kept)
	return write, seen, toPrimary
}

// SessionAfter is the session to hand the client with the response: what
// held of the session it sent, its write in this request, and, with the
// session floor on, the highest position the request's reads may have
// shown. A read that could not be measured raises Seen to the primary's
// position instead, which is past anything it could have shown.
func (r *Router) SessionAfter(ctx context.Context, obs *Observation) Session {
	s := obs.kept()
	s.Write = Later(s.Write, obs.Token())
	if r.cfg.Monotonic && r.cfg.Mode != ModeOff {
		seen, complete := obs.Seen()
		if !complete {
			r.counts.session(SessionUnmeasured)
			var p Position
			err := r.Primary(context.WithoutCancel(ctx), func(ctx context.Context) (err error) {
				p, _, err = r.cfg.WAL.CurrentPosition(ctx)
				return err
			})
			if err != nil {
				r.cfg.Logger.WarnContext(ctx, "a read's position was not measured and the primary's is unknown: the client's floor may not cover it", "err", err)
			}
			seen = Later(seen, p)
		}
		s.Seen = Later(s.Seen, seen)
	}
	if c := r.cfg.Replicas.Cluster(); c.System != "" {
		for _, p := range []*Position{&s.Write, &s.Seen} {
			if !p.IsZero() && p.System == "" {
				p.System = c.System
			}
		}
	}
	return s
}

// ForOwnRead is the decision for a read that must show the user's own
// writes.
func (r *Router) ForOwnRead(ctx context.Context, userID string) Decision {
	if r.cfg.Mode == ModeOff {
		return r.ForOwnReadOff()
	}
	d := r.ownRead(ctx, userID)
	if r.cfg.Monotonic {
		d = r.measured(d)
	}
	return r.counted(d)
}

// ForOwnReadOff is the decision RYW_MODE=off would make for a read that
// must show the user's own writes: any replica, whatever the user wrote.
// It exists to show the stale read side by side with the fix (the live
// page's "try it" panel), never to serve real traffic.
func (r *Router) ForOwnReadOff() Decision {
	return r.counted(r.replicaOrPrimary(0, ReasonRYWOff))
}

// ownRead routes a read that must show the user's writes. Whatever the
// mode, a replica serves it only if it has replayed the highest of:
//
//   - the user's token, from the tracker or sent back by the client;
//   - the tracker's floor, after Redis lost its state;
//   - the primary's fence, raised by writes the tracker could not record,
//     as confirmed by a poll of the primary within the fence lease;
//   - where the primary was RYW_MARKER_TTL ago (less a tenth): marks expire
//     after that long, so no replica further behind may serve, marks or
//     not.
//
// Time mode also sends the user to the primary for RYW_WINDOW after a
// write, judged on the tracker's clock alone. When the tracker cannot say
// what the user wrote, see unknownWrites.
func (r *Router) ownRead(ctx context.Context, userID string) Decision {
	marks, err := r.cfg.Tracker.Lookup(ctx, userID)
	unknown := ""
	switch {
	case err != nil:
		unknown = "tracker unavailable"
	case marks.Unreliable && (marks.Token.IsZero() || marks.WrittenAt.IsZero()):
		// Redis may have evicted the user's marks, or one of them.
		unknown = "marks may have been evicted"
	case r.cfg.Mode == ModeLSN && marks.Token.IsZero() && !marks.WrittenAt.IsZero():
		// A time mark without its token: the token was lost.
		unknown = "token missing"
	}
	var toPrimary Reason
	var token LSN
	if unknown == "" && !marks.Token.IsZero() {
		switch p, v := r.cfg.Replicas.Cluster().Judge(marks.Token); v {
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
		return r.unknownWrites(ctx, userID, unknown, err)
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
	return r.replicaPast(ctx, max(token, seen), marks.Floor, reason)
}

// lostMark handles a user's mark that names a write a failover lost: it
// replaces the mark with the switch point, where the user's surviving
// writes end, and the instance that manages to (one, of all that find it)
// counts the lost write and logs it.
func (r *Router) lostMark(ctx context.Context, userID string, lost, switchPoint Position) {
	replaced, err := r.cfg.Tracker.Repair(ctx, userID, lost, switchPoint)
	switch {
	case err != nil:
		r.cfg.Logger.WarnContext(ctx, "a user's mark names a write that a failover lost; could not replace it", "user", userID, "mark", lost.String(), "err", err)
	case replaced:
		r.counts.lostWrite(LostInTracker, CertainlyLost(lost, switchPoint))
		r.cfg.Logger.ErrorContext(ctx, "a write was lost in a failover: the user's last acknowledged write is not in the new primary's history",
			"user", userID, "write", lost.String(), "switchPoint", switchPoint.String())
	}
}

// unknownWrites routes an own-write read when the user's writes are not
// known (Redis failed, or may have lost the user's marks). Time mode reads
// from the primary, as its window cannot be judged. Lsn mode reads from a
// replica that has replayed everything the primary had written when the
// read arrived, which covers every write acknowledged before it, from any
// device, without Redis; that costs the primary one position query.
func (r *Router) unknownWrites(ctx context.Context, userID, why string, cause error) Decision {
	if r.cfg.Mode != ModeLSN {
		r.cfg.Logger.WarnContext(ctx, "user's writes unknown; reading from the primary", "user", userID, "why", why, "err", cause)
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	var now LSN
	err := r.Primary(ctx, func(ctx context.Context) (err error) {
		now, err = r.cfg.WAL.CurrentLSN(ctx)
		return err
	})
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "user's writes and the primary's position unknown; reading from the primary", "user", userID, "why", why, "err", cause)
		return Decision{Node: Primary, Reason: ReasonTrackerUnavailable}
	}
	r.cfg.Logger.DebugContext(ctx, "user's writes unknown; reading from a replica at the primary's position", "user", userID, "why", why, "err", cause)
	return r.replicaPast(ctx, now, 0, ReasonTrackerUnavailable)
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
		if d, ok := r.waitFor(ctx, need, reason); ok {
			return d
		}
	}
	if len(r.cfg.Replicas.CaughtUp(0)) == 0 {
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
	fence, asOf := r.cfg.Replicas.Fence()
	if asOf.IsZero() || now.Sub(asOf) >= r.cfg.FenceLease {
		return 0, false
	}
	bound, ok := r.cfg.Replicas.RequiredLSN(now.Add(-r.cfg.MarkerTTL * 9 / 10))
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
		names := r.cfg.Replicas.CaughtUp(0)
		answered := make(chan struct{}, len(names))
		for _, n := range names {
			go func() {
				r.cfg.Replicas.Refresh(wctx, []string{n})
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

// refreshGrace bounds how long a read with a short RYW_MAX_WAIT (or none)
// waits for the replicas to tell their positions: a healthy replica
// answers in well under it.
const refreshGrace = 50 * time.Millisecond

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

// RecordWrite secures a committed write of the user for read-your-writes.
// Call it after the commit and before answering. It takes the primary's WAL
// position as the write's causal token, puts it in the request's
// Observation (for the client's copy) and records it in the tracker,
// retrying within a bounded budget. If the tracker cannot record it, it
// raises the primary's fence to the token instead and waits out the fence
// lease (or less, if every replica has replayed the write by then), so that
// every instance keeps every user's reads off replicas that lack the write;
// the response then says write-fenced. Only if that fails too does it
// return ErrUnconfirmed. Recording goes on if the client goes away: the
// write committed either way.
func (r *Router) RecordWrite(ctx context.Context, userID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.RecordBudget)
	defer cancel()
	var token Position
	var server string
	attempts := 0
	err := retry(ctx, func(ctx context.Context) error {
		attempts++
		return r.Primary(ctx, func(ctx context.Context) (err error) {
			token, server, err = r.cfg.WAL.CurrentPosition(ctx)
			return err
		})
	})
	if attempts > 1 {
		// The primary failed right after the commit: the position may come
		// from another server than the one the write committed on.
		server = "?"
	}
	if err != nil {
		return fmt.Errorf("%w: read the write's WAL position: %v", ErrUnconfirmed, err)
	}
	if low := observationFrom(ctx).writeLowBound(); low.Timeline == token.Timeline && low.LSN <= token.LSN {
		token.Low = low.LSN
	}
	observationFrom(ctx).setToken(token)
	var prev Position
	err = retry(ctx, func(ctx context.Context) (err error) {
		prev, err = r.cfg.Tracker.Record(ctx, userID, token)
		return err
	})
	if err == nil {
		r.replacedMark(ctx, userID, prev, token)
		return r.samePrimary(ctx, userID, server, token)
	}
	r.cfg.Logger.WarnContext(ctx, "write committed but not recorded in the tracker; raising the fence", "user", userID, "token", token.String(), "err", err)
	if err := r.fence(ctx, token.LSN); err != nil {
		return err
	}
	return r.samePrimary(ctx, userID, server, token)
}

// samePrimary checks that the write committed on the server its token
// was read on ("?": not known, the first read of the position failed). If
// the primary changed in between (a failover), the token
// names a position of the new primary's history, which covers the write
// if it survived, and so is recorded; but whether it survived is unknown:
// the write is unconfirmed, and the client is told.
func (r *Router) samePrimary(ctx context.Context, userID, server string, token Position) error {
	wrote := observationFrom(ctx).primaryAddr()
	if wrote == "" || (server != "?" && (server == "" || wrote == server)) {
		return nil
	}
	r.cfg.Logger.WarnContext(ctx, "the primary changed after a write committed: it may have been lost in a failover", "user", userID,
		"wroteOn", wrote, "tokenFrom", server, "token", token.String())
	return fmt.Errorf("%w: the primary changed after the write committed, which a failover may have lost", ErrUnconfirmed)
}

// replacedMark checks the mark a write's mark replaced: one from an
// earlier timeline, past where the write's timeline left it, names a write
// that a failover lost, found before any read of the user did. Only the
// write that replaced the mark sees it, so it is counted once.
func (r *Router) replacedMark(ctx context.Context, userID string, prev, token Position) {
	if prev.IsZero() || prev.Timeline == 0 || prev.Timeline >= token.Timeline || prev.System != token.System {
		return
	}
	c := r.cfg.Replicas.Cluster()
	if c.Timeline != token.Timeline || c.Ends == nil {
		// The monitor has not read this timeline's history yet. The
		// write's budget may be spent by now (it waited out a failover):
		// this gets time of its own.
		var ends map[int]LSN
		err := retry(context.WithoutCancel(ctx), func(ctx context.Context) error {
			return r.Primary(ctx, func(ctx context.Context) (err error) {
				ends, err = r.cfg.WAL.History(ctx, token.Timeline)
				return err
			})
		})
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "a write replaced a mark of an earlier timeline, whose history could not be read: it may name a lost write", "user", userID, "mark", prev.String(), "err", err)
			return
		}
		c = Cluster{System: token.System, Timeline: token.Timeline, Ends: ends}
	}
	if switchPoint, v := c.Judge(prev); v == Lost {
		r.counts.lostWrite(LostInTracker, CertainlyLost(prev, switchPoint))
		r.cfg.Logger.ErrorContext(ctx, "a write was lost in a failover: the user's last acknowledged write is not in the new primary's history",
			"user", userID, "write", prev.String(), "switchPoint", switchPoint.String())
	}
}

// fence secures a write the tracker could not record: see RecordWrite.
func (r *Router) fence(ctx context.Context, token LSN) error {
	fenceErr := retry(ctx, func(ctx context.Context) error {
		return r.Primary(ctx, func(ctx context.Context) error { return r.cfg.WAL.RaiseFence(ctx, token) })
	})
	// An instance trusts the fence it read for the lease after the poll
	// that read it started; once the lease has passed since the fence
	// committed, every instance's view is newer than it. A tenth more
	// covers clocks that run at slightly different rates.
	until := r.cfg.Now().Add(r.cfg.FenceLease + r.cfg.FenceLease/10)
	if fenceErr != nil {
		r.cfg.Logger.ErrorContext(ctx, "could not raise the fence either; waiting for every replica to replay the write", "token", token.String(), "err", fenceErr)
	}
	for {
		if r.cfg.Replicas.AllCaughtUp(token) || (fenceErr == nil && !r.cfg.Now().Before(until)) {
			observationFrom(ctx).setReason(ReasonWriteFenced)
			r.counts.add(Decision{Node: Primary, Reason: ReasonWriteFenced})
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: tracker and fence failed and the replicas did not all replay %s in time: %v", ErrUnconfirmed, token, fenceErr)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// retry runs f up to recordAttempts times, backing off a little, while ctx
// lasts.
func retry(ctx context.Context, f func(context.Context) error) error {
	var err error
	for i := range recordAttempts {
		if err = f(ctx); err == nil {
			return nil
		}
		if i == recordAttempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(10<<i) * time.Millisecond):
		}
	}
	return err
}

// Read runs read with the decision in ctx. On a replica it gets
// ReplicaTimeout. If it fails there because the replica is unreachable,
// does not answer in time, is restarting, cancelled the query in a replay
// conflict, or turned out behind the read's MinLSN, the replica is taken out
// of rotation (or its position lowered) and read runs once more, on the
// primary, within PrimaryTimeout: the request is answered, not failed.
func (r *Router) Read(ctx context.Context, read func(context.Context) error) error {
	d, ok := DecisionFrom(ctx)
	if !ok || d.OnPrimary() {
		return r.Primary(ctx, read)
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.ReplicaTimeout)
	err := read(rctx)
	timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded)
	cancel()
	if err == nil && d.MeasureSeen {
		// What the read found is the replica's position: the next read of
		// this client, which needs it, finds the replica known to be
		// there.
		if seen, at := observationFrom(ctx).seenOnNode(d.Node); !seen.IsZero() {
			r.cfg.Replicas.Saw(d.Node, seen, at)
		}
	}
	if err == nil || ctx.Err() != nil {
		// A request that was cancelled or ran out of time says nothing
		// about the replica.
		return err
	}
	reason := ReasonReplicaFailed
	var behind *BehindError
	switch {
	case timedOut:
		err = fmt.Errorf("no answer within %s (RYW_REPLICA_TIMEOUT): %w", r.cfg.ReplicaTimeout, err)
		r.cfg.Replicas.MarkDown(d.Node, err)
	case errors.As(err, &behind):
		r.cfg.Replicas.Behind(d.Node, behind.Replayed)
		reason = ReasonReplicaBehind
	case IsUnavailable(err) || isRecoveryConflict(err):
		r.cfg.Replicas.MarkDown(d.Node, err)
	case isSchemaBehind(err):
		// A replica that restarted may come up consistent at a point before
		// the schema the query needs: it is behind, not broken. (If the
		// primary lacks the table too, the retry returns its error.)
		reason = ReasonReplicaBehind
	default:
		return err
	}
	r.cfg.Logger.WarnContext(ctx, "read failed on a replica; retrying on the primary", "replica", d.Node, "err", err)
	observationFrom(ctx).setReason(reason)
	r.counts.add(Decision{Node: Primary, Reason: reason})
	r.counts.retry(reason)
	retried := Decision{Node: Primary, Reason: reason, MeasureSeen: d.MeasureSeen}
	if err := r.Primary(WithDecision(ctx, retried), read); err != nil {
		return fmt.Errorf("retry on the primary after %s failed: %w", d.Node, err)
	}
	return nil
}

// Primary runs work that needs the primary (a write, or a read routed
// there) within PrimaryTimeout: a primary that hangs fails the request with
// context.DeadlineExceeded instead of holding it.
func (r *Router) Primary(ctx context.Context, work func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PrimaryTimeout)
	defer cancel()
	return work(ctx)
}
