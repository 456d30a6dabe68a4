package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrBusy is a request that waited for a turn longer than the admission
// limit allows: the service is the bottleneck, and the client should come
// back after Retry-After.
var ErrBusy = errors.New("the service is at its limit of requests in progress")

// Admission lets at most limit requests through to the handlers at once;
// the others wait their turn in arrival order, and one that waits longer
// than maxWait is refused with ErrBusy.
//
// Past the machine's capacity, more requests in progress do not finish
// more work; they queue for a database connection instead, where
// database/sql hands a returned connection to a random waiter, so a few
// wait out their deadline and are retried on the primary, which adds work
// when there is already too much. Waiting here, in order, before any work
// is done, keeps the tail short and nothing is retried (docs/PROFILING.md,
// "A queue in front of the handlers").
//
// It registers in reg how many requests wait (ryw_http_requests_waiting)
// and how many were refused (ryw_http_requests_shed_total). limit must be
// at least 1.
func Admission(limit int, maxWait time.Duration, reg prometheus.Registerer) gin.HandlerFunc {
	if limit < 1 {
		panic(fmt.Sprintf("middleware.Admission: limit must be at least 1, got %d", limit))
	}
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ryw_http_requests_waiting",
		Help: "HTTP requests waiting for their turn: the admission limit's queue (MAX_IN_FLIGHT).",
	})
	shed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ryw_http_requests_shed_total",
		Help: "HTTP requests refused with 503 after waiting their turn past MAX_QUEUE_WAIT.",
	})
	reg.MustRegister(waiting, shed)
	slots := make(chan struct{}, limit)
	return func(c *gin.Context) {
		if err := take(c.Request.Context(), slots, maxWait, waiting); err != nil {
			if errors.Is(err, ErrBusy) {
				shed.Inc()
			}
			fail(c, err)
			return
		}
		defer func() { <-slots }()
		c.Next()
	}
}

// take waits for a slot: at once when one is free, else in turn (a
// channel's waiting senders are served in the order they came) until
// maxWait passes or the client goes away.
func take(ctx context.Context, slots chan struct{}, maxWait time.Duration, waiting prometheus.Gauge) error {
	select {
	case slots <- struct{}{}:
		return nil
	default:
	}
	waiting.Inc()
	defer waiting.Dec()
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: waited %s for one of %d places", ErrBusy, maxWait, cap(slots))
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
