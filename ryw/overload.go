package ryw

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Under overload, the service itself is the bottleneck: requests wait for a
// slot in a replica's pool, or for a connection to be opened, until the
// replica timeout runs out. Such a read says nothing about the replica,
// which never saw it; taking the replica out of rotation for it (as the
// router once did) sent every read to the primary, which then saturated in
// turn, while the replica came back at its next check to a burst of reads
// on a pool that had lost its connections: a loop of flaps. See
// docs/PROFILING.md, "Overload (issue 20)".

// attempt is one read's try on a replica: whether it got as far as the
// replica, that is, whether a connection of the replica's pool was handed
// the read's statement. A read that timed out before that spent its time
// in the service: waiting for a pool slot, or for a connection to open.
type attempt struct {
	reached atomic.Bool
	// left is how long the read had left, in nanoseconds, when a
	// connection took it.
	left atomic.Int64
}

type attemptKey struct{}

// tryReplica starts a read's attempt on a replica: the returned context
// carries it, for the pool's connections to mark when they take the
// read's statement. It also adds the read to the retry budget.
func (r *Router) tryReplica(ctx context.Context) (context.Context, *attempt) {
	r.budget.deposit()
	a := &attempt{}
	return context.WithValue(ctx, attemptKey{}, a), a
}

// reachReplica notes, on a replica connection, that the read in ctx was
// handed to it.
func reachReplica(ctx context.Context) {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok || ctx.Err() != nil || a.reached.Load() {
		// (A read whose deadline passed while it waited for the connection
		// is not sent: it never reaches the replica.)
		return
	}
	left := time.Duration(math.MaxInt64)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	a.left.Store(int64(left))
	a.reached.Store(true)
}

// waitedLocally reports whether a read that failed with err (timedOut: its
// deadline passed) spent its time in the service rather than on the
// replica: it timed out (its deadline, or a connect timeout) before a
// connection took it, or with less than half of timeout left when one
// did, which is no fair trial of the replica. A refused or broken
// connection is the replica's doing and is not a local wait. An unknown
// attempt (nil) counts as reached in time.
func (a *attempt) waitedLocally(err error, timedOut bool, timeout time.Duration) bool {
	var netErr net.Error
	if a == nil || !(timedOut || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())) {
		return false
	}
	return !a.reached.Load() || time.Duration(a.left.Load()) < timeout/2
}

// poolGaveUp reports whether err is database/sql's driver.ErrBadConn, bare:
// the pool tried three of its connections and found each closed before the
// read was sent. With the pool at its limit, all three are ones it hands
// back rather than new ones (database/sql reuses a returned connection
// even when it wants a new one), and under overload they were closed by the
// service itself: statements it cancelled at their deadline. The replica
// never saw the read, so this is no verdict on it (a replica that is down
// fails the monitor's next check, and the reads in flight on it fail with
// broken connections, which are).
func poolGaveUp(err error) bool {
	return errors.Is(err, driver.ErrBadConn)
}

// retryBudget bounds the reads that a busy service retries on the primary
// after they waited in vain for a replica's pool: each replica read adds
// retryRatio of a retry, and time adds retryFloor per second, up to
// retryBurst. A replica that really failed is not held to it: it leaves the
// rotation at once, which bounds its retries by the reads in flight.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

const (
	retryRatio = 0.1
	retryFloor = 10 // retries per second, whatever the traffic
	retryBurst = 100
)

func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.tokens+retryRatio, retryBurst)
	b.mu.Unlock()
}

// take withdraws one retry, if the budget has one.
func (b *retryBudget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*retryFloor, retryBurst)
	} else {
		b.tokens = min(b.tokens+retryFloor, retryBurst)
	}
	b.last = now
	if b.tokens < 1-1e-9 { // (ten deposits of 0.1 fall just short of 1)
		return false
	}
	b.tokens--
	return true
}

// ErrOverloaded is the error of a read that waited for a replica's pool
// past the replica timeout when the retry budget had no room to retry it
// on the primary: the service is overloaded, and the client should come
// back later (503 with Retry-After).
var ErrOverloaded = errors.New("ryw: overloaded: no replica connection within the replica timeout, and the primary's retry budget is spent")

type aheadKey struct{}

// openingAhead reports whether ctx opens connections ahead of need (see
// warm): they are bounded by ctx alone, not by the pool's ConnectTimeout.
func openingAhead(ctx context.Context) bool { return ctx.Value(aheadKey{}) != nil }

// warm opens up to n connections of db at once, so that the first reads
// find them open instead of each opening one within its own deadline
// (under load, a connect takes longer than a read may wait), and returns
// how many it opened. The connections go back to the pool idle. Each is
// pinged: one the server closed (it restarted) is dropped, and another
// opened in its place.
func warm(ctx context.Context, db *sql.DB, n int) (opened int, err error) {
	ctx = context.WithValue(ctx, aheadKey{}, true)
	conns := make(chan *sql.Conn, n)
	var wg sync.WaitGroup
	var first sync.Once
	for range n {
		wg.Go(func() {
			for range 2 {
				c, cerr := db.Conn(ctx)
				if cerr == nil {
					if cerr = c.PingContext(ctx); cerr == nil {
						conns <- c
						return
					}
					c.Close()
				}
				first.Do(func() { err = cerr })
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	close(conns)
	for c := range conns {
		c.Close()
		opened++
	}
	return opened, err
}
