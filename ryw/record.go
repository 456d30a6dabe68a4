package ryw

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// ErrUnconfirmed means a write committed, but neither the tracker nor the
// fence could record it, and the replicas had not all replayed it in time:
// another instance could still serve the user a read without it. The
// client should be told, not answered as if all were well.
var ErrUnconfirmed = errors.New("the write committed, but read-your-writes could not be secured for it")

// RecordWrite secures a committed write of the user for read-your-writes.
// Call it after the commit and before answering. It takes the primary's WAL
// position as the write's causal token, puts it in the request's
// Observation (for the client's copy) and records it in the tracker,
// retrying within a bounded budget. If the tracker cannot record it, it
// raises the primary's fence to the token instead and waits until every
// instance has acknowledged it (or every replica has replayed the write,
// or the fence lease has passed), so that every instance keeps every
// user's reads off replicas that lack the write;
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
	if err := r.fence(ctx, token); err != nil {
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
	c := r.cfg.View.Cluster()
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
func (r *Router) fence(ctx context.Context, token Position) error {
	fenceErr := retry(ctx, func(ctx context.Context) error {
		return r.Primary(ctx, func(ctx context.Context) error { return r.cfg.WAL.RaiseFence(ctx, token.LSN) })
	})
	// An instance trusts the fence it read for the lease after the poll
	// that read it started; once the lease has passed since the fence
	// committed, every instance's view is newer than it. A tenth more
	// covers clocks that run at slightly different rates.
	until := r.cfg.Now().Add(r.cfg.FenceLease + r.cfg.FenceLease/10)
	if fenceErr != nil {
		r.cfg.Logger.ErrorContext(ctx, "could not raise the fence either; waiting for every replica to replay the write", "token", token.String(), "err", fenceErr)
	}
	acked := fenceErr == nil && !r.cfg.NoFenceAcks
	raised := r.asked.Load()
	fenced := func() error {
		observationFrom(ctx).setReason(ReasonWriteFenced)
		r.counts.add(Decision{Node: Primary, Reason: ReasonWriteFenced})
		return nil
	}
	secured := func() bool {
		return r.cfg.View.AllCaughtUp(token.LSN) || (fenceErr == nil && !r.cfg.Now().Before(until))
	}
	for {
		if secured() || acked && r.acknowledged(ctx, token, raised, until.Sub(r.cfg.Now())) {
			return fenced()
		}
		r.refreshBehind(ctx, token.LSN, fenceErr == nil, until.Sub(r.cfg.Now()))
		if secured() {
			return fenced()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: tracker and fence failed and the replicas did not all replay %s in time: %v", ErrUnconfirmed, token, fenceErr)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// acknowledged reports whether every instance that may route by a fence
// has acknowledged token's (see PrimaryWAL.AcknowledgedFence): then none
// routes an own-write read to a replica without the write. Concurrent
// fenced writes share one question to the primary, each waiting at most
// left (what remains of the lease). Only a question asked after the fence
// was raised counts (raised: r.asked read once it was): an earlier one may
// not list an instance that registered since and routes by an older fence.
func (r *Router) acknowledged(ctx context.Context, token Position, raised uint64, left time.Duration) bool {
	if left <= 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, left)
	defer cancel()
	least, err := askAfter(ctx, r, &r.acks, strconv.Itoa(token.Timeline), raised, nil, func(ctx context.Context) (LSN, error) {
		return r.cfg.WAL.AcknowledgedFence(ctx, token.Timeline)
	})
	return err == nil && least >= token.LSN
}

// refreshBehind asks the healthy replicas not known to have replayed
// token for their position now, rather than waiting for the monitor's
// next poll: a fenced write is answered once every replica has it, and
// the known positions are up to a poll interval old. With bounded, it
// waits at most left (what remains of the lease).
// Concurrent writes share each replica's query (see Refresh). A replica
// out of rotation is left to the monitor: until it is back, the write
// waits out the lease anyway.
func (r *Router) refreshBehind(ctx context.Context, token LSN, bounded bool, left time.Duration) {
	done := r.cfg.View.CaughtUp(token)
	behind := slices.DeleteFunc(r.cfg.View.CaughtUp(0), func(n string) bool { return slices.Contains(done, n) })
	if len(behind) == 0 {
		return
	}
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left)
		defer cancel()
	}
	r.cfg.View.Refresh(ctx, behind)
}

// retry runs f up to recordAttempts times, backing off a little, while ctx
// lasts. A tracker that is shedding calls (ErrTrackerShedding) sheds them
// for longer than the back-off: trying again would only delay the fence.
func retry(ctx context.Context, f func(context.Context) error) error {
	var err error
	for i := range recordAttempts {
		if err = f(ctx); err == nil {
			return nil
		}
		if i == recordAttempts-1 || errors.Is(err, ErrTrackerShedding) {
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
