package ryw

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
)

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
	// A hopeful read's miss is recorded below, once it is known where the
	// read ends.
	d.handsOver = d.hopeful
	err, reason, retry := r.readReplica(ctx, d, read)
	if !retry {
		return err
	}
	alt, ok := r.moveFrom(d, err)
	if !ok {
		alt, ok = r.hopeAgain(d, err)
	}
	if ok {
		// The pinned replica is behind what the read needs, as its
		// connection found just now: so is everything it showed the
		// client, and a replica past what the read needs may take over.
		// Or a replica tried hopefully was behind: another that keeps up
		// is tried once.
		if err, reason, retry = r.readReplica(WithDecision(ctx, alt), alt, read); !retry {
			return err
		}
		d = alt
	}
	if d.handsOver && reason == d.missReason() {
		observationFrom(ctx).setReason(reason)
		r.counts.add(Decision{Node: Primary, Reason: reason})
	}
	retried := Decision{Node: Primary, Reason: reason, MeasureSeen: d.MeasureSeen}
	if err := r.Primary(WithDecision(ctx, retried), read); err != nil {
		return fmt.Errorf("retry on the primary after %s failed: %w", d.Node, err)
	}
	return nil
}

// readReplica runs read on the replica d names, within ReplicaTimeout.
// retry says the replica failed it (see replicaFailed) and it is to run
// elsewhere, for reason.
func (r *Router) readReplica(ctx context.Context, d Decision, read func(context.Context) error) (err error, reason Reason, retry bool) {
	rctx, cancel := context.WithTimeout(ctx, r.cfg.ReplicaTimeout)
	rctx, at := r.tryReplica(rctx)
	err = read(rctx)
	timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded)
	cancel()
	if err == nil && d.MeasureSeen {
		obs := observationFrom(ctx)
		// What the read found is the replica's position: the next read of
		// this client, which needs it, finds the replica known to be
		// there.
		if seen, at := obs.seenOnNode(d.Node); !seen.IsZero() {
			r.cfg.View.Saw(d.Node, seen, at)
		}
		if node, inc, mixed := obs.Pinned(); inc != 0 && !mixed && node == d.Node {
			r.learnRun(node, inc)
		}
	}
	if err == nil || ctx.Err() != nil {
		// A request that was cancelled or ran out of time says nothing
		// about the replica.
		return err, "", false
	}
	reason, retry, err = r.replicaFailed(ctx, d, err, timedOut, at)
	return err, reason, retry
}

// moveFrom returns where a pinned read goes when its replica turned out
// behind (err is its *BehindError, with the position the replica's
// connection read): another replica known to have replayed the read's
// moveAt.
func (r *Router) moveFrom(d Decision, err error) (Decision, bool) {
	var behind *BehindError
	if d.Pin == 0 || !errors.As(err, &behind) || behind.Replayed == 0 || behind.Replayed >= d.moveAt {
		return Decision{}, false
	}
	names := slices.DeleteFunc(r.cfg.View.CaughtUp(d.moveAt), func(n string) bool { return n == d.Node })
	if len(names) == 0 {
		return Decision{}, false
	}
	return Decision{Node: names[rand.IntN(len(names))], Reason: d.Reason, MinLSN: d.moveAt, MeasureSeen: d.MeasureSeen}, true
}

// hopeAgain returns where a read tried hopefully goes when its replica
// turned out behind (err is its *BehindError): another replica that keeps
// up, equally hopefully. The second miss goes to the primary.
func (r *Router) hopeAgain(d Decision, err error) (Decision, bool) {
	var behind *BehindError
	if !d.hopeful || d.again || d.Pin != 0 || !errors.As(err, &behind) {
		return Decision{}, false
	}
	names := slices.DeleteFunc(slices.Clone(r.cfg.View.Following()), func(n string) bool { return n == d.Node })
	if len(names) == 0 {
		return Decision{}, false
	}
	alt := d
	alt.Node = names[rand.IntN(len(names))]
	alt.again = true
	return alt, true
}

// replicaFailed judges a read that failed with err on the replica d
// names (at: its attempt, nil if unknown): if the replica is unreachable,
// did not answer in time (timedOut), is restarting, cancelled the query in
// a replay conflict, turned out behind the read's MinLSN, lacks the schema,
// or was sent a write, the replica is taken out of rotation (or its
// position lowered) as it deserves, the retry is counted, and retry says to
// run the read once more, on the primary, for reason. A read that timed
// out before it reached the replica (see attempt) leaves the replica in
// rotation (so does one that a connection took with less than half the
// timeout left), and is retried only within the retry budget; out of it, it
// fails with ErrOverloaded. Any other error is the query's own: no retry.
// out is the error to return when there is no retry.
func (r *Router) replicaFailed(ctx context.Context, d Decision, err error, timedOut bool, at *attempt) (reason Reason, retry bool, out error) {
	reason = ReasonReplicaFailed
	// The replica's statement_timeout is the replica timeout: whichever
	// clock fires first, the verdict is the same.
	timedOut = timedOut || isStatementTimeout(err)
	var behind *BehindError
	var moved *MovedError
	switch {
	case at.waitedLocally(err, timedOut, r.cfg.ReplicaTimeout) || poolGaveUp(err):
		// The time went to our own pool or to opening a connection, or the
		// pool had only connections the service had closed: the replica
		// never saw the read. The monitor's checks judge it.
		if !r.budget.take(r.cfg.Now()) {
			r.counts.shed()
			return "", false, fmt.Errorf("%w (%s): %w", ErrOverloaded, d.Node, err)
		}
		reason = ReasonReplicaBusy
		r.cfg.Logger.DebugContext(ctx, "no replica connection within the replica timeout; retrying on the primary", "replica", d.Node, "err", err)
		observationFrom(ctx).setReason(reason)
		r.counts.add(Decision{Node: Primary, Reason: reason})
		r.counts.retry(reason)
		return reason, true, err
	case errors.As(err, &moved):
		// The pinned replica restarted: nothing is wrong with it, but
		// what it showed the client before has no bound but the
		// primary's position.
		r.learnRun(moved.Node, moved.Now)
		r.cfg.Logger.DebugContext(ctx, "a session's replica restarted; reading from the primary", "replica", d.Node, "err", err)
		observationFrom(ctx).setReason(ReasonSessionMoved)
		r.counts.add(Decision{Node: Primary, Reason: ReasonSessionMoved})
		r.counts.retry(ReasonSessionMoved)
		return ReasonSessionMoved, true, err
	case timedOut:
		err = fmt.Errorf("no answer within the replica timeout (%s): %w", r.cfg.ReplicaTimeout, err)
		r.cfg.View.MarkDown(d.Node, err)
	case errors.As(err, &behind) && d.hopeful && d.Pin == 0:
		// A replica that was only likely to have the read's floor did not:
		// the read goes to another that keeps up, or to the primary, as it
		// would have had no replica been tried (see Router.hopeful).
		// Nothing failed. (Read, which tries another, records the reason
		// once the read ends on the primary.)
		r.cfg.View.Behind(d.Node, behind.Replayed)
		miss := d.missReason()
		if !d.handsOver {
			observationFrom(ctx).setReason(miss)
			r.counts.add(Decision{Node: Primary, Reason: miss})
		}
		return miss, true, err
	case errors.As(err, &behind):
		r.cfg.View.Behind(d.Node, behind.Replayed)
		reason = ReasonReplicaBehind
	case IsUnavailable(err) || isRecoveryConflict(err):
		r.cfg.View.MarkDown(d.Node, err)
	case isSchemaBehind(err):
		// A replica that restarted may come up consistent at a point before
		// the schema the query needs: it is behind, not broken. (If the
		// primary lacks the table too, the retry returns its error.)
		reason = ReasonReplicaBehind
	case isReadOnly(err):
		// A statement that writes, in a read: the primary runs it.
	default:
		return "", false, err
	}
	r.cfg.Logger.WarnContext(ctx, "read failed on a replica; retrying on the primary", "replica", d.Node, "err", err)
	observationFrom(ctx).setReason(reason)
	r.counts.add(Decision{Node: Primary, Reason: reason})
	r.counts.retry(reason)
	return reason, true, err
}

// Primary runs work that needs the primary (a write, or a read routed
// there) within PrimaryTimeout: a primary that hangs fails the request with
// context.DeadlineExceeded instead of holding it.
func (r *Router) Primary(ctx context.Context, work func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PrimaryTimeout)
	defer cancel()
	return work(ctx)
}
