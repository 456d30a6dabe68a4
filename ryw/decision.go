package ryw

import (
	"context"
	"sync"
	"time"
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
	ReasonRYWOff             Reason = "ryw-off"             // ModeOff (or an UncheckedRead): any replica, whatever the user wrote
	ReasonNoReplica          Reason = "no-replica"          // no healthy replica (or none configured)
	ReasonReplicaFailed      Reason = "replica-failed"      // the read failed on a replica and was retried on the primary
	ReasonLSNCaughtUp        Reason = "lsn-caught-up"       // lsn mode: a replica that has replayed the user's token
	ReasonReplicasBehind     Reason = "replicas-behind"     // no replica has replayed what the read needs (lsn mode: within MaxWait)
	ReasonNoToken            Reason = "no-token"            // lsn mode: the user has no recorded write (replicas still held to the floors)
	ReasonReplicaBehind      Reason = "replica-behind"      // the chosen replica turned out behind the token: retried on the primary
	ReasonReplicaBusy        Reason = "replica-busy"        // no connection of the replica's pool within the replica timeout (the service is busy, not the replica): retried on the primary, within the retry budget
	ReasonFenceUnknown       Reason = "fence-unknown"       // the primary's fence was not confirmed within the lease (the primary does not answer the monitor)
	ReasonWriteFenced        Reason = "write-fenced"        // a write the tracker could not record: secured by the primary's fence instead
	ReasonSessionFloor       Reason = "session-floor"       // no replica has replayed what the client's reads have already shown (monotonic reads)
	ReasonSessionMoved       Reason = "session-moved"       // the replica the client's session is pinned to restarted or left rotation: read from the primary, whose position then bounds the session (monotonic reads)
	ReasonWriteLost          Reason = "write-lost"          // the user's last write was lost in a failover: read from the new primary
	ReasonSessionLost        Reason = "session-lost"        // what the client was shown was lost in a failover: read from the new primary
	ReasonTimelineUnknown    Reason = "timeline-unknown"    // a token or mark of a timeline this instance cannot place yet (it has not seen the promotion, or cannot read the history)
)

// Decision says which node serves the reads of one request, and why.
type Decision struct {
	// Node is Primary or the name of a replica.
	Node   string
	Reason Reason
	// MinLSN, for a replica, is how far it must have replayed for the read
	// to be correct. Each connection checks it before the query runs (see
	// OpenPool), so a replica whose known position was overstated (it just
	// restarted, say) never answers; 0 means any position will do.
	MinLSN LSN
	// MeasureSeen asks each query of the read to report what it may have
	// shown, for the client's session (monotonic reads): on the primary, or
	// through a pooler, an upper bound of the position its data may reflect
	// (see measure.go); on a replica connection, the incarnation of the
	// replica that served it (see Session.Pin).
	MeasureSeen bool
	// Pin, for a replica, is the incarnation that must serve the read: the
	// one the client's session is pinned to (0: any).
	Pin Incarnation
	// moveAt, for a pinned read, is what another replica must have
	// replayed to serve it instead, should the pinned one turn out behind
	// MinLSN: what the client has seen elsewhere, and MinLSN.
	moveAt LSN
	// hopeful: the replica is not known to have replayed MinLSN, only
	// likely to (see Router.hopeful); if its connection finds it behind,
	// the read goes to the primary as if no replica had it.
	hopeful bool
	// again: a hopeful read's second replica, after the first was behind.
	again bool
	// handsOver: the caller (Router.Read) records a hopeful miss itself,
	// once it knows where the read ends.
	handsOver bool
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
	token  Position
	// seen is the highest position the request's measured reads reported;
	// partial is set when a read that should have been measured was not.
	seen    Position
	partial bool
	// seenOn is, per replica, the highest position measured on it and when
	// the first of those reads started.
	seenOn map[string]measured
	// pin is the replica incarnation the request's pinned reads ran on,
	// and pinNode its replica's name; pins counts those reads, and
	// pinMixed is set when they ran on more than one incarnation.
	pin      Incarnation
	pinNode  string
	pins     int
	pinMixed bool
	// measuredReads counts the reads that reported a position, or should
	// have (unmeasured).
	measuredReads int
	// settle is set when the request's next read on the primary must
	// settle first (see settleQuery): the client's session, or this
	// request, read from a replica since the last read that settled;
	// settleGen counts the marks, so that a settle clears only the marks
	// made before it started.
	settle    bool
	settleGen int
	// held is what held of the client's session, on the current timeline.
	held Session
	// writeLow is where the primary was before the request's write.
	writeLow Position
	// wroteOn is the address of the primary the request's statements ran
	// on ("" before any; "*" when they ran on more than one).
	wroteOn string
	// writes counts the statements (and commits) of the request that
	// wrote, or may have, on the primary; unknown is set when one of them
	// failed in a way that leaves it unknown whether it committed.
	writes  int
	unknown bool
	// cancels release the deadlines given to statements whose rows
	// outlive the callback that ran them (see Plugin), when the request
	// ends.
	cancels []context.CancelFunc
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

func (o *Observation) setToken(t Position) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.token = Later(o.token, t)
	o.mu.Unlock()
}

// Token returns the causal token of the request's write (zero if it wrote
// nothing).
func (o *Observation) Token() Position {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.token
}

func (o *Observation) setWriteLow(p Position) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.writeLow = p
	o.mu.Unlock()
}

func (o *Observation) writeLowBound() Position {
	if o == nil {
		return Position{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writeLow
}

func (o *Observation) ranOnPrimary(addr string) {
	if o == nil || addr == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.wroteOn {
	case "", addr:
		o.wroteOn = addr
	default:
		o.wroteOn = "*"
	}
}

// wrote records a statement or commit on the primary that wrote, or
// that failed so that it may have (unknown).
func (o *Observation) wrote(unknown bool) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.writes++
	o.unknown = o.unknown || unknown
	o.mu.Unlock()
}

// writeCount returns how many writes the request made, and whether one's
// outcome is unknown.
func (o *Observation) writeCount() (n int, unknown bool) {
	if o == nil {
		return 0, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writes, o.unknown
}

// deferCancel keeps cancel until release.
func (o *Observation) deferCancel(cancel context.CancelFunc) {
	o.mu.Lock()
	o.cancels = append(o.cancels, cancel)
	o.mu.Unlock()
}

// untilDone bounds ctx by d, until the request or job whose observation
// it carries ends (a statement's rows may be read after the call that ran
// it returns). Outside a request or job (nothing to end it), or with no d,
// ctx is returned as it is.
func untilDone(ctx context.Context, d time.Duration) context.Context {
	obs := observationFrom(ctx)
	if d <= 0 || obs == nil {
		return ctx
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	obs.deferCancel(cancel)
	return ctx
}

// release ends the deadlines deferCancel kept.
func (o *Observation) release() {
	o.mu.Lock()
	cancels := o.cancels
	o.cancels = nil
	o.mu.Unlock()
	for _, c := range cancels {
		c()
	}
}

func (o *Observation) primaryAddr() string {
	if o == nil {
		return ""
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.wroteOn
}

func (o *Observation) setKept(s Session) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.held = s
	o.mu.Unlock()
}

func (o *Observation) kept() Session {
	if o == nil {
		return Session{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.held
}

// measured is a replay position a read found on a replica, and when the
// read started.
type measured struct {
	pos Position
	at  time.Time
}

// addSeen records a measured read: p, the upper bound of what it may have
// shown; on a replica (node), also how far the replica had replayed.
func (o *Observation) addSeen(node string, p Position, replayed LSN, at time.Time) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.measuredReads++
	o.seen = Later(o.seen, p)
	if node == "" || replayed == 0 {
		return
	}
	if o.seenOn == nil {
		o.seenOn = map[string]measured{}
	}
	m, ok := o.seenOn[node]
	if !ok {
		m.at = at
	}
	m.pos = Later(m.pos, Position{LSN: replayed})
	o.seenOn[node] = m
}

// seenOnNode returns the highest replay position the request's reads
// measured on the replica node, and when the first of them started.
func (o *Observation) seenOnNode(node string) (Position, time.Time) {
	if o == nil {
		return Position{}, time.Time{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.seenOn[node]
	return m.pos, m.at
}

func (o *Observation) unmeasured() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.partial = true
	o.measuredReads++
	o.mu.Unlock()
}

// mustSettle marks the request's next read on the primary as one that
// must settle first: the client has read from a replica.
func (o *Observation) mustSettle() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.settle = true
	o.settleGen++
	o.mu.Unlock()
}

// settling reports whether a read on the primary must settle first, and
// the mark to pass to settled once it has.
func (o *Observation) settling() (bool, int) {
	if o == nil {
		return false, 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.settle, o.settleGen
}

// settled records a read on the primary that settled after mark gen (see
// settling): the reads after it show at least what it showed, unless a
// replica read was marked since.
func (o *Observation) settled(gen int) {
	o.mu.Lock()
	if o.settleGen == gen {
		o.settle = false
	}
	o.mu.Unlock()
}

// pinned records a read that ran on the replica node's incarnation inc.
func (o *Observation) pinned(node string, inc Incarnation) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pins > 0 && o.pin != inc {
		o.pinMixed = true
	}
	o.pin, o.pinNode = inc, node
	o.pins++
}

// Pinned returns the replica incarnation the request's reads ran on
// without being measured, and its replica's name; mixed is set when they
// ran on more than one.
func (o *Observation) Pinned() (node string, inc Incarnation, mixed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pinNode, o.pin, o.pinMixed
}

// reads returns how many of the request's reads were pinned and how many
// were measured (or should have been).
func (o *Observation) reads() (pinned, measured int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pins, o.measuredReads
}

// Seen returns the highest position the request's measured reads may have
// shown, and whether every read that should have been measured was.
func (o *Observation) Seen() (p Position, complete bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen, !o.partial
}

// Reason returns the reason that replaced the original decision's (after a
// retry), or "".
func (o *Observation) Reason() Reason {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reason
}

type clientSessionKey struct{}

// WithClientSession stores the session the client sent back (the
// X-RYW-Token header or cookie): the position of its last write it knows
// of, and what its reads have shown.
func WithClientSession(ctx context.Context, s Session) context.Context {
	return context.WithValue(ctx, clientSessionKey{}, s)
}

func clientSession(ctx context.Context) Session {
	s, _ := ctx.Value(clientSessionKey{}).(Session)
	return s
}
