// Package services holds the use cases of the API. Controllers call them
// with the request's context; they call repositories and the ryw core.
package services

import (
	"context"
	"sync"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// Probe checks that one dependency answers.
type Probe struct {
	Name  string
	Check func(context.Context) error
}

// Health reports whether the service can do its work: it needs the primary;
// replicas and Redis only make it better, so their loss degrades it.
type Health struct {
	primary     Probe
	replicas    []Probe
	redis       Probe
	timeout     time.Duration
	monitor     ReplicaMonitor
	counts      DecisionCounter
	primaryView PrimaryMonitor
	details     bool
	issuer      func() (haveKeys bool, err error)
}

// ReplicaMonitor is what readiness shows of the replica monitor.
type ReplicaMonitor interface {
	Status() []ryw.ReplicaStatus
}

// PrimaryMonitor is what readiness shows of the monitor's view of the
// primary.
type PrimaryMonitor interface {
	Primary() ryw.PrimaryStatus
}

// DecisionCounter is what readiness shows of the router.
type DecisionCounter interface {
	Counts() ryw.CountsSnapshot
}

// WithRouting adds the monitor's view of each replica and the routing
// counters to the report.
func (h *Health) WithRouting(m ReplicaMonitor, c DecisionCounter) *Health {
	h.monitor, h.counts = m, c
	return h
}

// WithPrimary adds the warnings about the primary that the monitor finds:
// a timeline history the database role may not read.
func (h *Health) WithPrimary(p PrimaryMonitor) *Health {
	h.primaryView = p
	return h
}

// WithDetails makes the report include what is internal: error texts, WAL
// positions and lag, and the routing counters. Off by default, so that a
// public /readyz says only what is up; /metrics has the figures.
func (h *Health) WithDetails(on bool) *Health {
	h.details = on
	return h
}

// WithIssuer adds the token issuer's key set (AUTH_MODE=jwt): without any
// key no caller can be identified, so the service is unavailable; with
// cached keys but a failing refresh, degraded (known keys still verify).
func (h *Health) WithIssuer(state func() (haveKeys bool, err error)) *Health {
	h.issuer = state
	return h
}

// NewHealth builds the readiness check. Each probe gets timeout to answer.
func NewHealth(primary Probe, replicas []Probe, redis Probe, timeout time.Duration) *Health {
	return &Health{primary: primary, replicas: replicas, redis: redis, timeout: timeout}
}

// Readiness statuses.
const (
	StatusReady       = "ready"       // every dependency answers
	StatusDegraded    = "degraded"    // the primary answers; a replica or Redis does not
	StatusUnavailable = "unavailable" // the primary does not answer
)

// Readiness is the state of every dependency at one moment.
type Readiness struct {
	Status   string      `json:"status" enums:"ready,degraded,unavailable"`
	Primary  Component   `json:"primary"`
	Replicas []Component `json:"replicas"`
	Redis    Component   `json:"redis"`
	// Issuer is the token issuer's key set, in AUTH_MODE=jwt only.
	Issuer *Component `json:"issuer,omitempty"`
	// Routing counts the routing decisions made since start, by reason
	// and by node.
	Routing *ryw.CountsSnapshot `json:"routing,omitempty"`
	// Warnings are what costs the service part of its guarantees while it
	// works: they leave the status as it is, and are shown whatever
	// READYZ_DETAILS says, for the operator to fix.
	Warnings []Warning `json:"warnings,omitempty"`
}

// Warning is one condition that weakens the service without making it
// unready.
type Warning struct {
	Code string `json:"code" example:"timeline_history_unreadable"`
	// Message says what it costs and how to fix it.
	Message string `json:"message" example:"the database role may not read the primary's timeline history: grant it EXECUTE on pg_read_file(text)"`
	// Error is the cause (with READYZ_DETAILS only).
	Error string `json:"error,omitempty" example:"ryw: the role may not execute pg_read_file(text), which reads the primary's timeline history"`
}

// Warning codes.
const (
	// WarnTimelineHistory: the primary's timeline history cannot be read
	// (ryw.PrimaryStatus.HistoryError).
	WarnTimelineHistory = "timeline_history_unreadable"
)

// timelineHistoryMessage is WarnTimelineHistory's message: what the
// operator loses, and the fix.
const timelineHistoryMessage = "the primary's timeline history cannot be read (grant the database role EXECUTE on pg_read_file(text)): " +
	"nothing is lost until a failover; after one, reads that must show a write made before it go to the primary (reason timeline-unknown) " +
	"until the user writes again or the write's mark expires, and writes the failover lost are not detected"

// Component is one dependency's state.
type Component struct {
	Name      string  `json:"name" example:"replica1"`
	Up        bool    `json:"up"`
	LatencyMs float64 `json:"latencyMs" example:"0.4"`
	// Error is why the dependency is down (with READYZ_DETAILS only).
	Error string `json:"error,omitempty" example:"dial tcp 127.0.0.1:5433: connect: connection refused"`
	// Replication is the replica monitor's view: whether the replica is in
	// rotation, how far it has replayed and how far it lags.
	Replication *ryw.ReplicaStatus `json:"replication,omitempty"`
}

// Check probes every dependency in parallel.
func (h *Health) Check(ctx context.Context) Readiness {
	probes := append([]Probe{h.primary, h.redis}, h.replicas...)
	results := make([]Component, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { results[i] = h.probe(ctx, p) })
	}
	wg.Wait()
	r := Readiness{Primary: results[0], Redis: results[1], Replicas: results[2:], Status: StatusReady}
	switch {
	case !r.Primary.Up:
		r.Status = StatusUnavailable
	case !r.Redis.Up:
		r.Status = StatusDegraded
	}
	for _, c := range r.Replicas {
		if !c.Up && r.Status == StatusReady {
			r.Status = StatusDegraded
		}
	}
	if h.issuer != nil {
		haveKeys, err := h.issuer()
		r.Issuer = &Component{Name: "issuer", Up: haveKeys && err == nil}
		if err != nil {
			r.Issuer.Error = err.Error()
		}
		switch {
		case !haveKeys:
			r.Status = StatusUnavailable
		case err != nil && r.Status == StatusReady:
			r.Status = StatusDegraded
		}
	}
	if h.primaryView != nil {
		if p := h.primaryView.Primary(); p.HistoryError != "" {
			r.Warnings = append(r.Warnings, Warning{Code: WarnTimelineHistory, Message: timelineHistoryMessage, Error: p.HistoryError})
		}
	}
	if !h.details {
		for _, c := range append([]*Component{&r.Primary, &r.Redis}, pointers(r.Replicas)...) {
			c.Error = ""
		}
		if r.Issuer != nil {
			r.Issuer.Error = ""
		}
		for i := range r.Warnings {
			r.Warnings[i].Error = ""
		}
		return r
	}
	if h.monitor != nil {
		for _, st := range h.monitor.Status() {
			for i := range r.Replicas {
				if r.Replicas[i].Name == st.Name {
					r.Replicas[i].Replication = &st
				}
			}
		}
	}
	if h.counts != nil {
		c := h.counts.Counts()
		r.Routing = &c
	}
	return r
}

func pointers(cs []Component) []*Component {
	out := make([]*Component, len(cs))
	for i := range cs {
		out[i] = &cs[i]
	}
	return out
}

func (h *Health) probe(ctx context.Context, p Probe) Component {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	start := time.Now()
	err := p.Check(ctx)
	c := Component{Name: p.Name, Up: err == nil, LatencyMs: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		c.Error = err.Error()
	}
	return c
}
