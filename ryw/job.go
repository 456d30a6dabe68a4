package ryw

import (
	"context"
	"fmt"
	"sync"
)

// Access says what a piece of work does with the database, which decides
// where its reads may run.
type Access int

const (
	// OwnRead must show the user's own writes: a replica serves it only if
	// it has replayed them, else the primary does.
	OwnRead Access = iota
	// StaleRead may show slightly stale data: any healthy replica (at or
	// past what the client has already been shown, with monotonic reads).
	StaleRead
	// Write writes: every statement runs on the primary.
	Write
	// UncheckedRead ignores read-your-writes: any replica, whatever the user
	// wrote, as ModeOff routes every read. It exists to show the stale read
	// that read-your-writes prevents, never to serve real traffic.
	UncheckedRead
)

func (a Access) String() string {
	switch a {
	case OwnRead:
		return "own-read"
	case StaleRead:
		return "stale-read"
	case Write:
		return "write"
	case UncheckedRead:
		return "unchecked-read"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Job is one unit of work for one user: an HTTP request (Middleware makes
// one for each), or work outside HTTP, such as a background job acting for
// a user. Its context carries the routing decision; GORM and SQL route
// every statement run with it, and note the writes, which Finish records.
type Job struct {
	router *Router
	user   string
	ctx    context.Context
	obs    *Observation
	// sent is the session the client sent back, and sentToken its token
	// as sent (both empty if none).
	sent      Session
	sentToken string

	mu       sync.Mutex
	decision Decision
	recorded int   // writes recorded so far
	err      error // why the job's writes are not secured, once known
}

// Begin starts a job for user (the same identity the user's requests
// have) and returns the context to run its statements with. Call Finish
// when its statements have run: it records the writes.
//
//	ctx, job := balancer.Begin(ctx, userID, ryw.Write)
//	err := db.WithContext(ctx).Create(&order).Error
//	if ferr := job.Finish(); err == nil { err = ferr }
func (b *Balancer) Begin(ctx context.Context, user string, a Access) (context.Context, *Job) {
	return b.router.begin(ctx, user, a, Session{})
}

// begin starts a job with the session the client sent back.
func (r *Router) begin(ctx context.Context, user string, a Access, ses Session) (context.Context, *Job) {
	if !ses.IsZero() {
		ctx = WithClientSession(ctx, ses)
	}
	ctx, obs := WithObservation(ctx)
	j := &Job{router: r, user: user, obs: obs}
	switch a {
	case Write:
		j.decision = r.ForWrite(ctx)
	case StaleRead:
		j.decision = r.ForStaleRead(ctx)
	case UncheckedRead:
		j.decision = r.forUncheckedRead()
	default:
		if user == "" {
			// Nobody's writes to show.
			j.decision = r.ForStaleRead(ctx)
			break
		}
		j.decision = r.ForOwnRead(ctx, user)
	}
	j.ctx = WithDecision(ctx, j.decision)
	return j.ctx, j
}

// Decision returns where the job's reads go, and why.
func (j *Job) Decision() Decision { return j.decision }

// ServedBy returns the node that ran the job's last statement ("" if
// none ran), and the routing reason that holds for it: the decision's, or
// the one that replaced it after a retry.
func (j *Job) ServedBy() (node string, reason Reason) {
	node, reason = j.obs.ServedBy(), j.obs.Reason()
	if reason == "" {
		reason = j.decision.Reason
	}
	return node, reason
}

// Finish secures the job's writes for read-your-writes: it records every
// write made since the last call (none: nothing to do), so that the
// user's next reads, on any instance, show them. It returns an error that
// wraps ErrUnconfirmed if a write could not be secured, or if a write
// failed in a way that leaves it unknown whether it committed (it is
// secured as if it had). Tell the user: the write may be there, but their
// next read may not show it. Call it again after more writes; it is
// cheap when there are none.
func (j *Job) Finish() error {
	defer j.end()
	return j.secure()
}

// secure records the writes made since the last call: Finish without
// ending the job's statements (a response may still be reading rows).
func (j *Job) secure() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, unknown := j.obs.writeCount()
	if n > j.recorded {
		j.recorded = n
		if j.user != "" {
			if err := j.router.RecordWrite(j.ctx, j.user); err != nil && j.err == nil {
				j.err = err
			}
		}
	}
	if unknown && j.err == nil {
		j.err = fmt.Errorf("%w: the primary did not confirm the write (its outcome is unknown)", ErrUnconfirmed)
	}
	return j.err
}

// session returns the session to hand the client after the job: what held
// of the one it sent, its writes, and what its reads may have shown.
func (j *Job) session() Session {
	return j.router.SessionAfter(j.ctx, j.obs)
}

// end releases what the job's statements held.
func (j *Job) end() { j.obs.release() }
