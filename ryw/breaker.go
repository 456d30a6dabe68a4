package ryw

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// ErrTrackerShedding means the tracker did not call Redis, because Redis
// failed or timed out within the last breakerCooldown: a Redis that hangs
// costs one request its timeout, not every request.
var ErrTrackerShedding = errors.New("redis failed a moment ago; not calling it until a trial call succeeds")

// breakerCooldown is how long calls fail fast after Redis failed.
const breakerCooldown = time.Second

// breaker is a small circuit breaker in front of Redis. After a call fails
// for want of an answer (a timeout, a refused or broken connection), calls
// fail at once for breakerCooldown; then one trial call at a time goes
// through, and the first that succeeds closes the breaker.
type breaker struct {
	mu        sync.Mutex
	openUntil time.Time
	trial     bool // a trial call is in flight
}

// allow reports whether a call may go to Redis now; done must then be
// called with its error.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return true
	}
	if now.Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

// closed reports whether calls go through with no trial pending: Redis
// has not failed to answer lately.
func (b *breaker) closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntil.IsZero()
}

// done records a call's outcome.
func (b *breaker) done(err error, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	switch {
	case err == nil:
		b.openUntil = time.Time{}
	case unanswered(err):
		b.openUntil = now.Add(breakerCooldown)
	}
}

// unanswered reports whether err means Redis did not answer, as opposed to
// an answer that was an error.
func unanswered(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
