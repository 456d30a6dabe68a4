package ryw

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Mode selects how reads that must show a user's own writes are routed.
type Mode string

const (
	// ModeTime sends a user's reads to the primary for the window after the
	// user's last write, and afterwards only to replicas that have replayed
	// everything committed before that write.
	ModeTime Mode = "time"
	// ModeLSN sends a user's reads to any replica that has replayed the
	// user's last write, identified by its WAL position (the causal token).
	ModeLSN Mode = "lsn"
	// ModeOff routes every read to a replica: it demonstrates the stale
	// reads that read-your-writes prevents.
	ModeOff Mode = "off"
)

// ClusterView is what the router knows of the nodes: each replica's
// health and replay position, and the primary's position, fence and
// timeline history. *Monitor implements it, by polling them.
type ClusterView interface {
	// CaughtUp returns the healthy replicas known to have replayed min.
	CaughtUp(min LSN) []string
	// AllCaughtUp reports whether every replica is healthy and known to
	// have replayed min.
	AllCaughtUp(min LSN) bool
	// RequiredLSN returns a position at or past every commit that
	// completed before t; ok is false if none is known yet.
	RequiredLSN(t time.Time) (lsn LSN, ok bool)
	// PrimaryLSN returns the primary's position at its last poll.
	PrimaryLSN() LSN
	// PrimaryPosition is PrimaryLSN with its timeline, read together.
	PrimaryPosition() Position
	// Fence returns the primary's fence and when the poll that read it
	// started (zero if none has).
	Fence() (fence LSN, asOf time.Time)
	// Refresh asks the named replicas for their position now.
	Refresh(ctx context.Context, names []string)
	// Following returns the healthy replicas that keep up with the
	// primary, and so have most likely replayed what it had a moment ago.
	Following() []string
	// MarkDown takes a replica out of rotation after a query on it failed.
	MarkDown(name string, cause error)
	// Behind lowers a replica's known position to what a connection saw.
	Behind(name string, lsn LSN)
	// Saw raises a replica's known position to what a measured read on it
	// found, in a read that started at at.
	Saw(name string, pos Position, at time.Time)
	// Cluster returns the primary's system identifier, timeline and
	// timeline history, as last seen.
	Cluster() Cluster
}

// WAL is the router's view of the primary's write-ahead log. PrimaryWAL
// implements it.
type WAL interface {
	// CurrentLSN returns a position at or past every commit that has
	// returned: the causal token of a write that has just committed.
	CurrentLSN(ctx context.Context) (LSN, error)
	// CurrentPosition is CurrentLSN with the primary's system identifier
	// and timeline, the causal token of a write as tokens and marks carry
	// it, and the server it was read on ("" if unknown).
	CurrentPosition(ctx context.Context) (pos Position, server string, err error)
	// History returns where each ancestor of timeline ended, from the
	// primary's timeline history file.
	History(ctx context.Context, timeline int) (map[int]LSN, error)
	// RaiseFence raises the position every own-write read must see.
	RaiseFence(ctx context.Context, lsn LSN) error
	// AcknowledgedFence returns the lowest fence acknowledged on timeline
	// by the instances that may route by one (see
	// PrimaryWAL.AcknowledgedFence).
	AcknowledgedFence(ctx context.Context, timeline int) (LSN, error)
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Mode   Mode
	Window time.Duration // time mode: how long after a write a user's reads go to the primary
	// MarkerTTL is how long the tracker keeps a user's marks. A replica
	// further behind than that never serves an own-write read, marks or
	// not: a user without marks may have written just before they expired.
	MarkerTTL time.Duration
	// MaxWait is how long an lsn-mode read may wait for a replica to replay
	// the user's token before it goes to the primary (0: not at all).
	MaxWait time.Duration
	// CheckedReplicas says that every replica pool checks, on the
	// connection that runs each statement, that the replica has replayed
	// the decision's MinLSN (pools from OpenPool do; Balancer sets it).
	// With MaxWait 0, an lsn-mode read that no replica is known to have
	// replayed may then go to a replica that keeps up with the primary,
	// whose connection's check asks it, instead of asking every replica
	// first (see ClusterView.Following).
	CheckedReplicas bool
	// UnknownWritesOnReplicas, in lsn mode, sends a read whose user's
	// writes the tracker cannot tell (Redis failed, or may have lost the
	// user's marks) to a replica that has replayed the primary's position
	// as asked after the read arrived, instead of to the primary: through a
	// Redis outage, the primary answers one position query for the reads
	// that arrive together rather than every read, and each read takes a
	// round trip more (see docs/CONSISTENCY.md, "Reads of unknown writes").
	UnknownWritesOnReplicas bool
	// StaleReadsWithoutPrimary lets replicas serve stale-ok reads while the
	// primary has not answered within the fence lease (a primary outage,
	// before a failover is seen). Off, such reads go to the primary (503
	// while it is down): a replica that a failover leaves diverged would
	// otherwise show writes the promotion lost, and the session floors of
	// its clients would then be lost too.
	StaleReadsWithoutPrimary bool
	// Monotonic turns on the session floor (monotonic reads): every read
	// reports the highest position its data may reflect, the client's token
	// carries it, and the client's next read, own-write or stale-ok, is
	// served only at or past it.
	Monotonic bool
	Tracker   Tracker
	View      ClusterView
	WAL       WAL
	// FenceLease is how long after a successful poll of the primary an
	// instance trusts the fence it read (default DefaultFenceLease). A
	// write whose marks could not be recorded raises the fence and waits
	// out the lease before it is answered, so that every instance knows of
	// it by then: every instance must use the same lease.
	FenceLease time.Duration
	// NoFenceAcks makes a fenced write wait out the whole lease (or
	// until every replica has replayed it) without counting the
	// instances' acknowledgements (see PrimaryWAL.AcknowledgedFence):
	// needed while instances of a version that does not acknowledge the
	// fence (before ryw_fence_ack) route on the same primary, as in a
	// rolling upgrade from one.
	NoFenceAcks bool
	// RecordBudget bounds how long recording a write may take, retries,
	// fence and lease included (default, and at least: enough for every
	// tracker attempt and the lease, plus a second).
	RecordBudget time.Duration
	// ReplicaTimeout bounds each read on a replica (default 1 s): one that
	// overruns takes the replica out of rotation and is retried on the
	// primary, so a hung replica costs a request at most this much.
	ReplicaTimeout time.Duration
	// PrimaryTimeout bounds each read or write on the primary (default 5 s).
	PrimaryTimeout time.Duration
	Logger         *slog.Logger
	// Now is the clock (default time.Now). It is only ever compared with
	// itself.
	Now func() time.Time
}

// Defaults of RouterConfig.
const (
	DefaultFenceLease     = 300 * time.Millisecond
	DefaultMarkerTTL      = 10 * time.Minute
	DefaultReplicaTimeout = time.Second
	DefaultPrimaryTimeout = 5 * time.Second
	// recordAttempts is how many times a tracker write is tried.
	recordAttempts = 3
)

// Router makes the per-request routing decisions: it is the read-your-writes
// policy. When unsure, it reads from the primary.
type Router struct {
	cfg       RouterConfig
	counts    Counters
	positions singleflight.Group // the primary's position, asked once for many requests
	acks      singleflight.Group // the acknowledged fence, asked once for many fenced writes
	// nowPositions is the primary's position for reads whose user's writes
	// are unknown, asked once for the reads that arrived before the query.
	nowPositions singleflight.Group
	lastNow      atomic.Pointer[answer[LSN]] // its latest answer
	// unknownWarn lets one read of unknown writes in unknownWarnEvery log
	// a warning; the others log at debug level (see warnUnknown).
	unknownWarn rate.Sometimes
	// asked numbers the shared questions to the primary (nowPositions,
	// acks; see askAfter): one numbered past what a caller read when it
	// arrived was asked after it arrived.
	asked atomic.Uint64
	// budget bounds the retries of reads that waited in vain for a
	// replica's pool (see replicaFailed).
	budget retryBudget
	// runs is each replica's incarnation, as its connections last found it
	// (replica name → Incarnation): the replica a session's pin names.
	runs sync.Map
}

// NewRouter builds a router.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FenceLease <= 0 {
		cfg.FenceLease = DefaultFenceLease
	}
	if cfg.MarkerTTL <= 0 {
		cfg.MarkerTTL = DefaultMarkerTTL
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.PrimaryTimeout <= 0 {
		cfg.PrimaryTimeout = DefaultPrimaryTimeout
	}
	// Every tracker attempt may take its whole timeout, and the fence its
	// lease: a budget shorter than that would fail writes it could secure.
	cfg.RecordBudget = max(cfg.RecordBudget, recordAttempts*DefaultTrackerTimeout+cfg.FenceLease*11/10+time.Second)
	return &Router{cfg: cfg, counts: newCounters(), unknownWarn: rate.Sometimes{Interval: unknownWarnEvery}}
}

// Mode returns the router's mode.
func (r *Router) Mode() Mode { return r.cfg.Mode }

// Counts returns how many decisions were made, by reason and by node.
func (r *Router) Counts() CountsSnapshot { return r.counts.snapshot() }

// IgnoreToken counts a client token that is not routed on, and why
// (TokenBadSignature, TokenAhead).
func (r *Router) IgnoreToken(why string) { r.counts.ignore(why) }

func (r *Router) counted(d Decision) Decision {
	r.counts.add(d)
	return d
}

// answer is the answer to a shared question to the primary, and the
// number of the call that asked it (see askAfter).
type answer[T any] struct {
	val   T
	asked uint64
}

// askAfter runs ask on the primary through g, shared by concurrent callers
// under key, and returns the answer of a call that started after the
// caller read r.asked as since: a caller that joins a call started before
// it waits for the next. With last set, the latest answer is kept there,
// and a caller that finds one asked after since takes it without asking.
// It waits at most until ctx ends.
func askAfter[T any](ctx context.Context, r *Router, g *singleflight.Group, key string, since uint64, last *atomic.Pointer[answer[T]], ask func(context.Context) (T, error)) (T, error) {
	if last != nil {
		if a := last.Load(); a != nil && a.asked > since {
			return a.val, nil
		}
	}
	for {
		ch := g.DoChan(key, func() (any, error) {
			a := answer[T]{asked: r.asked.Add(1)}
			err := r.Primary(context.WithoutCancel(ctx), func(ctx context.Context) (err error) {
				a.val, err = ask(ctx)
				return err
			})
			if err == nil && last != nil {
				for old := last.Load(); old == nil || old.asked < a.asked; old = last.Load() {
					if last.CompareAndSwap(old, &a) {
						break
					}
				}
			}
			return a, err
		})
		select {
		case res := <-ch:
			if res.Err != nil {
				var zero T
				return zero, res.Err
			}
			if a := res.Val.(answer[T]); a.asked > since {
				return a.val, nil
			}
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}
