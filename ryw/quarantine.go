package ryw

import "time"

// Quarantine damps a replica that flaps: one that fails again soon after it
// rejoined the rotation is held out for a backoff that doubles with every
// such relapse (1 s, 2 s, ... 30 s), even while its checks pass, and starts
// again from nothing once it has stayed up for a while. A replica that
// fails once, after a long healthy run, rejoins at its next good check.
type quarantine struct {
	rejoined time.Time     // when it last came back into rotation
	backoff  time.Duration // the current hold, 0 when not flapping
	until    time.Time     // held out of rotation until then
}

const (
	quarantineBase = time.Second
	quarantineMax  = 30 * time.Second
	// flapWindow is how soon after rejoining a failure counts as a relapse.
	flapWindow = 10 * time.Second
)

// down records that the replica left the rotation at now, and returns how
// long it is now held out (0: not held).
func (q *quarantine) down(now time.Time) time.Duration {
	switch {
	case q.rejoined.IsZero() || now.Sub(q.rejoined) >= flapWindow:
		q.backoff = 0
	case q.backoff == 0:
		q.backoff = quarantineBase
	default:
		q.backoff = min(2*q.backoff, quarantineMax)
	}
	q.until = now.Add(q.backoff)
	return q.backoff
}

// held reports whether the replica must stay out at now, though it answers.
func (q *quarantine) held(now time.Time) bool { return now.Before(q.until) }

// up records that the replica rejoined the rotation at now.
func (q *quarantine) up(now time.Time) { q.rejoined = now }
