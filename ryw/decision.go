package ryw

import (
	"context"
	"sync"
)

// Primary is the node name of the primary in decisions, headers and logs.
const Primary = "primary"

// Reason says why a request is served where it is. It is sent to clients in
// X-Routing-Reason, so the values are a stable contract.
type Reason string

const (
	ReasonWrite              Reason = "write"               // writes always go to the primary
	ReasonRecentWrite        Reason = "recent-write"        // the user wrote within the window
	ReasonNoRecentWrite      Reason = "no-recent-write"     // the user's last write is older than the window (or none)
	ReasonStaleOK            Reason = "stale-ok"            // the endpoint accepts slightly stale data
	ReasonTrackerUnavailable Reason = "tracker-unavailable" // Redis failed: when unsure, read from the primary
	ReasonRYWOff             Reason = "ryw-off"             // RYW_MODE=off: every read goes to a replica
	ReasonNoReplica          Reason = "no-replica"          // no healthy replica (or none configured)
	ReasonReplicaFailed      Reason = "replica-failed"      // the read failed on a replica and was retried on the primary
)

// Decision says which node serves the reads of one request, and why.
type Decision struct {
	// Node is Primary or the name of a replica.
	Node   string
	Reason Reason
}

// OnPrimary reports whether the decision sends reads to the primary.
func (d Decision) OnPrimary() bool { return d.Node == Primary }

type decisionKey struct{}

// WithDecision returns a context whose GORM queries the Plugin routes
// according to d.
func WithDecision(ctx context.Context, d Decision) context.Context {
	return context.WithValue(ctx, decisionKey{}, d)
}

// DecisionFrom returns the decision stored in ctx, if any.
func DecisionFrom(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(Decision)
	return d, ok
}

// Observation records, for one request, which node really ran its queries.
// The Plugin fills it in from the connection pool each query used, so that
// X-Served-By reports facts, not intentions.
type Observation struct {
	mu     sync.Mutex
	node   string
	reason Reason
}

type observationKey struct{}

// WithObservation returns a context in which queries are observed, and the
// observation to read afterwards.
func WithObservation(ctx context.Context) (context.Context, *Observation) {
	o := &Observation{}
	return context.WithValue(ctx, observationKey{}, o), o
}

func observationFrom(ctx context.Context) *Observation {
	o, _ := ctx.Value(observationKey{}).(*Observation)
	return o
}

func (o *Observation) record(node string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.node = node
	o.mu.Unlock()
}

func (o *Observation) setReason(r Reason) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.reason = r
	o.mu.Unlock()
}

// ServedBy returns the node that ran the request's last successful query,
// or "" if none ran.
func (o *Observation) ServedBy() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.node
}

// Reason returns the reason that replaced the original decision's (after a
// retry), or "".
func (o *Observation) Reason() Reason {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reason
}
