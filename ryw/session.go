package ryw

import (
	"cmp"
	"context"
	"time"
)

// vetClientToken returns the client's token, or 0 if it is above any
// position the primary has reached: such a token was not issued by this
// cluster, and routing on it would pin the user's reads to the primary or
// make them wait. A token newer than the monitor's last poll (a write since)
// is checked against the primary itself, once for all the requests that
// need it at the same time.
func (r *Router) vetClientToken(ctx context.Context, token LSN) LSN {
	if token <= r.cfg.View.PrimaryLSN() {
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
	if r.cfg.Monotonic && r.cfg.Mode != ModeOff && (s.Pin != 0 || !s.Seen.IsZero()) {
		// The client may have read from a replica: a read on the primary
		// must not show it less (see settleQuery).
		observationFrom(ctx).mustSettle()
	}
	c := r.cfg.View.Cluster()
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
	if r.cfg.Monotonic {
		kept.Pin = s.Pin
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
		_, pin, mixed := obs.Pinned()
		pinned, measured := obs.reads()
		if mixed || (pinned > 0 && measured > 0) {
			// Reads on two replica runs, or on one and elsewhere: one pin
			// cannot cover them, and what the replica showed has no
			// measured bound. The primary's position now covers both.
			complete = false
		}
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
		switch {
		case !complete || measured > 0:
			// Seen now covers every read the client made, the ones on
			// its pinned replica included: they ran before this request's
			// position was taken.
			s.Pin = 0
		case pinned > 0:
			s.Pin = pin
		}
	} else {
		s.Pin = 0
	}
	if c := r.cfg.View.Cluster(); c.System != "" {
		for _, p := range []*Position{&s.Write, &s.Seen} {
			if !p.IsZero() && p.System == "" {
				p.System = c.System
			}
		}
	}
	return s
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
