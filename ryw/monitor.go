package ryw

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// NodeDB is a named connection pool to one PostgreSQL node.
type NodeDB struct {
	Name string
	DB   *sql.DB
}

// ReplicaStatus is what the monitor knows of one replica.
type ReplicaStatus struct {
	Name string `json:"name"`
	// Healthy: it answered the last check, is in recovery, and has not
	// failed a query since. Only healthy replicas serve reads.
	Healthy bool `json:"healthy"`
	// ReplayLSN is the last position the replica was seen to have replayed:
	// a lower bound of what its queries see, while it does not restart.
	ReplayLSN LSN `json:"replayLsn"`
	// LagBytes is how much WAL the primary had written that the replica had
	// not replayed, at the last check; 0 when caught up.
	LagBytes uint64 `json:"lagBytes"`
	// Lag is how long the replica has been missing WAL the primary had: 0
	// when caught up, even when the primary is idle.
	Lag        time.Duration `json:"-"`
	LagSeconds float64       `json:"lagSeconds"`
	// RTT is the round trip of its checks, smoothed.
	RTT   time.Duration `json:"-"`
	RTTMs float64       `json:"rttMs"`
	// Timeline is the timeline it was on at its last good check.
	Timeline int `json:"timeline,omitempty"`
	// Quarantined: it answers, but it flapped, and is held out of
	// rotation until QuarantinedUntil.
	Quarantined      bool      `json:"quarantined,omitempty"`
	QuarantinedUntil time.Time `json:"quarantinedUntil,omitzero"`
	Error            string    `json:"error,omitempty"`
	CheckedAt        time.Time `json:"checkedAt"`
	// TakenOut counts the times the replica left the rotation (a failed
	// check or a failed query, while it was healthy) since the monitor
	// started.
	TakenOut uint64 `json:"takenOut"`
}

// walSample says that the primary was at lsn when asked at every moment from
// first to last: every commit that completed before last is at or below lsn.
type walSample struct {
	lsn         LSN
	first, last time.Time
}

// maxSamples bounds the primary's LSN history: at the default poll interval
// it covers minutes of writes, far beyond any window worth routing on.
const maxSamples = 8192

// Monitor polls the primary's WAL position and each replica's replay
// position on its own small pools, and keeps per replica: health, replay
// LSN and lag. A replica is healthy when it answers, is in recovery, and
// has not failed a query since it last answered.
type Monitor struct {
	primary  *sql.DB
	replicas []NodeDB
	interval time.Duration
	logger   *slog.Logger
	now      func() time.Time

	refreshes singleflight.Group // one position check per replica at a time
	// polling serialises polls of the primary (the loop's and Poll's), so
	// that acknowledgements are written in the order the fence was read.
	polling sync.Mutex

	mu     sync.RWMutex
	status map[string]ReplicaStatus
	// moved is when each replica's known replay position last changed (or
	// it came into rotation): one behind the primary that has not moved for
	// stallAfter is stalled (see Refresh).
	moved      map[string]time.Time
	quarantine map[string]*quarantine
	samples    []walSample // the primary's positions over time, increasing
	// fence is the primary's fence (see PrimaryWAL.RaiseFence) as of the
	// poll that started at fenceAsOf: that poll saw every fence raised
	// before it started.
	fence     LSN
	fenceAsOf time.Time
	// instance names the monitor's row in ryw_fence_ack. registeredAt is
	// when the statement that last (re)created it returned (zero: not
	// registered, and the fence is not to be routed by); ackStart is when
	// the last successful acknowledgement started, of ackedFence on
	// ackedTimeline. See acknowledge.
	instance      string
	registeredAt  time.Time
	ackStart      time.Time
	ackedFence    LSN
	ackedTimeline int
	ackErr        string
	forgotCrashed bool
	primaryErr    string // the last poll's error, "" when it answered
	// The primary's cluster and timeline at its last poll: replicas must
	// match both ("" and 0 before the first poll).
	primarySystem   string
	primaryTimeline int
	// ends is the primary's timeline history (nil until read, or when it
	// cannot be read).
	ends map[int]LSN
	// historyErr is why the history could not be read ("" when it was).
	historyErr string
	// mayReadHistory: the role may read the history (pg_read_file), as of
	// the last poll.
	mayReadHistory bool
	// warms are the pools the reads use, by replica, and their opening: a
	// replica back after a failure has its pool opened before it rejoins
	// (see rejoining). nil: none to open.
	warms map[string]*warmUp
	// runCtx is Run's context, which a read pool's opening derives from;
	// warming waits for the openings, and once stopped is set (Run is
	// ending) none starts (see rejoining).
	runCtx  context.Context
	warming sync.WaitGroup
	stopped bool
}

// warmUp is the opening of a replica's read pool db before it rejoins the
// rotation: running until done, for the failure numbered gen (see
// Monitor.rejoining).
type warmUp struct {
	db      *sql.DB
	gen     int
	running bool
	done    bool
}

// warmTimeout bounds the opening of a returning replica's read pool: a
// replica that cannot open its connections in it rejoins anyway, and its
// pool connects on use.
const warmTimeout = 5 * time.Second

// warmingUp is the status error of a replica back after a failure whose
// read pool is being opened.
const warmingUp = "opening its connections before it rejoins"

// NewMonitor builds a monitor that checks every interval. Its pools should
// be separate from the application's, so that a busy app pool never delays
// health checks.
func NewMonitor(primary *sql.DB, replicas []NodeDB, interval time.Duration, logger *slog.Logger) *Monitor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{
		primary: primary, replicas: replicas, interval: interval, logger: logger, now: time.Now,
		instance:   newInstanceID(),
		status:     make(map[string]ReplicaStatus, len(replicas)),
		moved:      make(map[string]time.Time, len(replicas)),
		quarantine: make(map[string]*quarantine, len(replicas)),
	}
	for _, r := range replicas {
		m.quarantine[r.Name] = &quarantine{}
		// Unknown until checked: not used before the first check.
		m.status[r.Name] = ReplicaStatus{Name: r.Name, Error: "not checked yet"}
	}
	return m
}

// Run polls until ctx ends: the primary and each replica in a loop of its
// own, so that one hung node never delays the others.
func (m *Monitor) Run(ctx context.Context) {
	m.mu.Lock()
	m.runCtx = ctx
	m.mu.Unlock()
	// A read pool still opening (see rejoining) stops with the loops, and
	// Run returns once it has: the pools it uses may then be closed. A
	// Refresh meanwhile starts no other.
	defer func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		m.warming.Wait()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { m.loop(ctx, m.pollPrimary) })
	for _, r := range m.replicas {
		wg.Go(func() { m.loop(ctx, func(ctx context.Context) { m.pollReplica(ctx, r) }) })
	}
	wg.Wait()
	m.deregister()
}

func (m *Monitor) loop(ctx context.Context, poll func(context.Context)) {
	for {
		poll(ctx)
		// ±10% jitter keeps the instances of a fleet from polling in step.
		d := m.interval + time.Duration((rand.Float64()-0.5)*0.2*float64(m.interval))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// Poll checks the primary, then every replica, once. Tests and start-up use
// it to have fresh state without waiting for the loops.
func (m *Monitor) Poll(ctx context.Context) {
	m.pollPrimary(ctx)
	names := make([]string, len(m.replicas))
	for i, r := range m.replicas {
		names[i] = r.Name
	}
	m.refresh(ctx, names, false)
}

func (m *Monitor) probeTimeout() time.Duration {
	return max(time.Second, 4*m.interval)
}

func (m *Monitor) pollPrimary(ctx context.Context) {
	m.polling.Lock()
	defer m.polling.Unlock()
	ctx, cancel := context.WithTimeout(ctx, m.probeTimeout())
	defer cancel()
	if m.readPrimary(ctx) {
		m.ack(ctx)
	}
}

// readPrimary polls the primary (see pollPrimary); it reports whether the
// fence or timeline it routes by changed, or the heartbeat is due, so that
// the instance must acknowledge them.
func (m *Monitor) readPrimary(ctx context.Context) (ackDue bool) {
	m.mu.RLock()
	registered := !m.registeredAt.IsZero()
	m.mu.RUnlock()
	if !registered {
		// Registered first, so that the fence this poll reads may be
		// routed by: a writer that does not see this instance's row yet
		// raised its fence before the poll started.
		m.ack(ctx)
	}
	// The time is taken before asking: every commit that completed before
	// it is at or below the position the primary answers, and every fence
	// raised before it is in the answer.
	asked := m.now()
	var text, fenceText, system, tliHex string
	var block, segment int64
	var mayRead bool
	err := m.primary.QueryRowContext(ctx, pollPrimaryQuery).Scan(&text, &block, &segment, &fenceText, &system, &tliHex, &mayRead)
	if err != nil {
		m.primaryFailed(ctx, err)
		return false // replicas are judged against the last known position
	}
	tli, err := strconv.ParseInt(tliHex, 16, 64)
	if err != nil {
		return false
	}
	lsn, err := ParseLSN(text)
	if err != nil {
		return false
	}
	lsn = recordEnd(lsn, block, segment)
	fence, err := ParseLSN(fenceText)
	if err != nil {
		return false
	}
	m.mu.RLock()
	changed := m.primarySystem != system || m.primaryTimeline != int(tli)
	// A grant or revoke of pg_read_file is seen at the next poll.
	needHistory := changed || (m.ends == nil && tli > 1) || mayRead != m.mayReadHistory
	m.mu.RUnlock()
	var ends map[int]LSN
	var historyErr error
	switch {
	case !needHistory:
	case !mayRead:
		// Not asked for, so that the server does not log a refusal at every
		// poll. Timeline 1 has no ancestors to read; the next one will.
		if tli <= 1 {
			ends = map[int]LSN{}
		}
		historyErr = ErrHistoryNotGranted
	default:
		ends, historyErr = readHistory(ctx, m.primary, int(tli))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fenceAsOf.IsZero() || m.primaryErr != "" {
		m.logger.Info("primary answers the monitor", "walLsn", lsn.String(), "fence", fence.String())
	}
	m.primaryErr = ""
	if changed && m.primarySystem != "" {
		m.logger.Warn("the primary changed", "systemIdentifier", system, "timeline", tli,
			"was", fmt.Sprintf("%s timeline %d", m.primarySystem, m.primaryTimeline))
		// The old history's positions past the new primary's are not in
		// its history: forget them, and the fence read there.
		i := sort.Search(len(m.samples), func(i int) bool { return m.samples[i].lsn > lsn })
		m.samples = m.samples[:i]
		// A fence raised past the switch point was lost with its WAL, but
		// the write it secured may have committed before it: the fence
		// stays at the switch point. Unknown history: it stays, erring
		// high (own-write reads on the primary until the new timeline
		// passes it).
		if end, ok := ends[m.primaryTimeline]; ok && historyErr == nil && m.primarySystem == system {
			m.fence = min(m.fence, end)
		}
		// This instance's row on the new primary may have been lost with
		// the old one's WAL: register again before routing by its fence.
		m.registeredAt = time.Time{}
	}
	switch {
	case needHistory && historyErr == nil:
		m.ends, m.historyErr = ends, ""
	case needHistory:
		if m.historyErr == "" || changed {
			m.logger.Warn("cannot read the primary's timeline history: after a failover, tokens and marks of earlier timelines go to the primary, and lost writes are not detected; grant the role EXECUTE on pg_read_file(text)",
				"timeline", tli, "err", historyErr)
		}
		// A history already read stays true of this timeline when the
		// grant is revoked; what is unreadable now is the next one's.
		if ends != nil || changed {
			m.ends = ends
		}
		m.historyErr = historyErr.Error()
	}
	m.mayReadHistory = mayRead
	m.primarySystem, m.primaryTimeline = system, int(tli)
	m.fence, m.fenceAsOf = max(m.fence, fence), asked
	ackDue = m.registeredAt.IsZero() || m.fence != m.ackedFence || m.primaryTimeline != m.ackedTimeline || asked.Sub(m.ackStart) >= ackBeat
	if n := len(m.samples); n > 0 && m.samples[n-1].lsn == lsn {
		m.samples[n-1].last = asked
		return ackDue
	}
	m.samples = append(m.samples, walSample{lsn: lsn, first: asked, last: asked})
	if len(m.samples) > maxSamples {
		m.samples = append(m.samples[:0], m.samples[len(m.samples)-maxSamples/2:]...)
	}
	return ackDue
}

// pollPrimaryQuery reads the primary's WAL insert position (at or past
// every commit that has returned, whatever synchronous_commit is; see
// PrimaryWAL.CurrentLSN), its fence, its cluster's system identifier, its
// timeline (the first 8 hex digits of a WAL file's name; the control
// file's checkpoint lags behind a promotion), and whether the role may
// read the timeline history (a catalog lookup: it costs the poll nothing
// measurable, and tells before any failover whether one will find its
// history unreadable).
const pollPrimaryQuery = `SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::bigint,
	pg_size_bytes(current_setting('wal_segment_size')), (SELECT lsn::text FROM ryw_fence WHERE id = 1),
	(SELECT system_identifier FROM pg_control_system())::text, substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8),
	COALESCE(has_function_privilege(to_regprocedure('pg_catalog.pg_read_file(text)'), 'EXECUTE'), false)`

// pollReplicaQuery reads whether the node is a standby, how far it has
// replayed, its cluster's system identifier, and the timeline it is on:
// the one its WAL receiver streams, else (no receiver, or a role without
// pg_read_all_stats, which sees NULL there) its last restartpoint's, which
// can lag behind a promotion it follows: a replica may then be left out
// until its next restartpoint, never let in wrongly.
const pollReplicaQuery = `SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
	(SELECT system_identifier FROM pg_control_system())::text,
	COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))`

// primaryFailed logs, once per outage, that the primary does not answer the
// monitor: own-write reads then stop trusting replicas once the fence is
// older than the router's lease.
func (m *Monitor) primaryFailed(ctx context.Context, err error) {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.primaryErr == "" {
		m.logger.Warn("the primary does not answer the monitor", "err", err)
	}
	m.primaryErr = err.Error()
}

// PrimaryLSN returns the primary's position at its last successful poll, 0
// before the first.
func (m *Monitor) PrimaryLSN() LSN {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if n := len(m.samples); n > 0 {
		return m.samples[n-1].lsn
	}
	return 0
}

// PrimaryPosition returns the primary's position at its last successful
// poll, with its timeline, read together.
func (m *Monitor) PrimaryPosition() Position {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := Position{System: m.primarySystem, Timeline: m.primaryTimeline}
	if n := len(m.samples); n > 0 {
		p.LSN = m.samples[n-1].lsn
	}
	return p
}

// HistoryError says why the primary's timeline history cannot be read (see
// ErrHistoryNotGranted), as of the monitor's last poll of the primary: ""
// when it can, and before the primary first answered.
func (m *Monitor) HistoryError() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.historyErr
}

// ErrHistoryNotGranted: the primary's role may not execute
// pg_read_file(text), with which the monitor reads the primary's timeline
// history. Without the history, after a failover, positions taken on an
// earlier timeline cannot be placed in the new one: reads that must show
// a write made before the failover (a client's token, a user's mark) go to
// the primary until the mark expires, and writes the failover lost are not
// detected. Grant the role EXECUTE on pg_read_file(text).
var ErrHistoryNotGranted = errors.New("ryw: the role may not execute pg_read_file(text), which reads the primary's timeline history")

// Cluster returns the primary's system identifier, timeline and timeline
// history at its last successful poll (zero before the first).
func (m *Monitor) Cluster() Cluster {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Cluster{System: m.primarySystem, Timeline: m.primaryTimeline, Ends: m.ends}
}

// readHistory reads where each ancestor of timeline ended, from the
// primary's timeline history file (the role needs EXECUTE on
// pg_read_file(text); the path is relative to the data directory, so
// pg_read_server_files is not needed). Timeline 1 has no ancestors.
func readHistory(ctx context.Context, db *sql.DB, timeline int) (map[int]LSN, error) {
	if timeline <= 1 {
		return map[int]LSN{}, nil
	}
	var text string
	if err := db.QueryRowContext(ctx, "SELECT pg_read_file($1)", fmt.Sprintf("pg_wal/%08X.history", timeline)).Scan(&text); err != nil {
		return nil, err
	}
	return parseHistory(text)
}

// Fence returns the highest fence seen on the primary and when the poll
// that confirmed it started (zero if none has succeeded yet).
//
// The fence is confirmed only while this instance's acknowledgement of it
// is live (see AcknowledgedFence): a writer may answer once the live
// acknowledgements reach its fence, without waiting out the lease, so an
// instance that cannot say which fence it routes by must not route by any.
func (m *Monitor) Fence() (LSN, time.Time) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.registeredAt.IsZero() || !m.fenceAsOf.After(m.registeredAt) || m.now().Sub(m.ackStart) >= ackValid {
		return m.fence, time.Time{}
	}
	return m.fence, m.fenceAsOf
}

// stallAfter is how long a replica behind the primary must not have moved
// to be stalled (see Refresh): two of its checks at the default interval.
const stallAfter = 100 * time.Millisecond

// stalled reports whether replica name is behind the primary and has not
// replayed anything for stallAfter.
func (m *Monitor) stalled(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.stalledLocked(name)
}

// stalledLocked is stalled; the caller holds m.mu.
func (m *Monitor) stalledLocked(name string) bool {
	st := m.status[name]
	return st.Healthy && st.LagBytes > 0 && m.now().Sub(m.moved[name]) >= max(stallAfter, 2*m.interval)
}

// fenceRead returns when the poll that last read the fence started,
// acknowledged or not.
func (m *Monitor) fenceRead() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.fenceAsOf
}

// fenceAcknowledged reports whether the monitor's acknowledgement of the
// fence is live (see Fence).
func (m *Monitor) fenceAcknowledged() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return !m.registeredAt.IsZero() && m.now().Sub(m.ackStart) < ackValid
}

// AllCaughtUp reports whether every configured replica is healthy and known
// to have replayed min: then no replica can serve anything older.
func (m *Monitor) AllCaughtUp(min LSN) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, r := range m.replicas {
		if st := m.status[r.Name]; !m.current(st) || st.ReplayLSN < min {
			return false
		}
	}
	return true
}

// current reports whether a replica may serve: healthy at its last check,
// and on the primary's timeline as the monitor knows it now (a promotion
// seen since the replica's check takes it out at once, not at its next
// check: its positions belong to another history until it follows). The
// caller holds m.mu.
func (m *Monitor) current(st ReplicaStatus) bool {
	return st.Healthy && (m.primaryTimeline == 0 || st.Timeline >= m.primaryTimeline)
}

// Refresh asks the named replicas for their replay position now, rather
// than waiting for their next check: the router does this when the known
// positions are behind a user's token. Concurrent refreshes of one replica
// share one check, which does not depend on any caller's context, so that
// many requests cost a replica one query and a caller that goes away
// changes nothing; each caller waits at most until its ctx ends.
//
// A stalled replica is not asked: one behind the primary whose replay has
// not moved for stallAfter (paused, or held by a replay conflict). Asking
// would cost it and the caller a query for a position it has not left;
// its regular checks still see it move again.
func (m *Monitor) Refresh(ctx context.Context, names []string) {
	m.refresh(ctx, names, true)
}

// refresh is Refresh; stalled replicas are asked too unless skipStalled.
func (m *Monitor) refresh(ctx context.Context, names []string, skipStalled bool) {
	var wg sync.WaitGroup
	for _, r := range m.replicas {
		for _, n := range names {
			if r.Name == n && !(skipStalled && m.stalled(n)) {
				wg.Go(func() {
					ch := m.refreshes.DoChan(r.Name, func() (any, error) {
						m.pollReplica(context.Background(), r)
						return nil, nil
					})
					select {
					case <-ch:
					case <-ctx.Done():
					}
				})
			}
		}
	}
	wg.Wait()
}

func (m *Monitor) pollReplica(parent context.Context, r NodeDB) {
	ctx, cancel := context.WithTimeout(parent, m.probeTimeout())
	defer cancel()
	var inRecovery bool
	var replay sql.NullString
	var system string
	var tli int
	// The round trip is the query's alone: opening a connection (a replica
	// just back, a pool refilling) costs a handshake that says nothing of
	// how fast the replica answers reads on the connections it keeps.
	var rtt time.Duration
	conn, err := r.DB.Conn(ctx)
	if err == nil {
		asked := time.Now()
		err = conn.QueryRowContext(ctx, pollReplicaQuery).Scan(&inRecovery, &replay, &system, &tli)
		rtt = time.Since(asked)
		conn.Close()
	}
	switch {
	case err != nil:
	case !inRecovery:
		err = errors.New("not in recovery: the node is not a standby")
	case !replay.Valid:
		err = errors.New("no WAL replayed yet")
	}
	var lsn LSN
	if err == nil {
		lsn, err = ParseLSN(replay.String)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.status[r.Name]
	if err != nil && parent.Err() != nil {
		// The caller gave up (a request went away, the monitor stops): that
		// says nothing about the replica.
		return
	}
	if err != nil {
		m.takeOut(r.Name, "replica out of rotation: its check failed", err, now, true)
		return
	}
	// Positions are comparable only within one cluster and one history: a
	// standby of another cluster, or one still on a timeline the primary
	// has left (not following a promotion, or diverged), never serves.
	switch {
	case m.primarySystem != "" && system != m.primarySystem:
		m.takeOut(r.Name, "replica out of rotation: another cluster", fmt.Errorf("system identifier %s, the primary's is %s", system, m.primarySystem), now, false)
		return
	case m.primaryTimeline > 0 && tli < m.primaryTimeline:
		m.takeOut(r.Name, "replica out of rotation: on an old timeline", fmt.Errorf("on timeline %d, the primary on %d", tli, m.primaryTimeline), now, false)
		return
	}
	q := m.quarantine[r.Name]
	if q.held(now) {
		m.status[r.Name] = ReplicaStatus{Name: r.Name, Quarantined: true, QuarantinedUntil: q.until, ReplayLSN: lsn,
			Error: "quarantined after flapping", CheckedAt: now, TakenOut: prev.TakenOut}
		return
	}
	if !prev.Healthy && prev.Error != "not checked yet" {
		if m.rejoining(r.Name) {
			m.status[r.Name] = ReplicaStatus{Name: r.Name, ReplayLSN: lsn, Timeline: tli, Error: warmingUp, CheckedAt: now,
				RTT: prev.RTT, RTTMs: prev.RTTMs, TakenOut: prev.TakenOut}
			return
		}
		// Back after a failure: a failure soon after counts as flapping.
		q.up(now)
		m.logger.Info("replica back in rotation", "replica", r.Name, "replayLsn", lsn.String())
	}
	st := m.statusAt(r.Name, lsn, now)
	if !prev.Healthy || lsn != prev.ReplayLSN {
		m.moved[r.Name] = now
	}
	st.Timeline, st.TakenOut = tli, prev.TakenOut
	// The round trip, smoothed: a replica that answers slowly is passed
	// over while a fast one can serve (see CaughtUp).
	st.RTT = rtt
	if prev.RTT > 0 {
		st.RTT = (prev.RTT*7 + rtt*3) / 10
	}
	st.RTTMs = float64(st.RTT.Microseconds()) / 1000
	m.status[r.Name] = st
}

// warmReadPools has every replica that comes back after a failure open
// its read pool's connections (pools, by replica name: as many as each
// allows) before it rejoins the rotation. A replica restarted under load
// otherwise rejoins with none: every read it is sent opens one, a fresh
// server's backends are slow to start, and the reads wait out the replica
// timeout and retry on the primary (replica-busy), a second in each.
func (m *Monitor) warmReadPools(pools []NodeDB) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.warms = make(map[string]*warmUp, len(pools))
	for _, p := range pools {
		m.warms[p.Name] = &warmUp{db: p.DB}
	}
}

// rejoining reports whether replica name, back after a failure, is to stay
// out of rotation while its read pool opens: it starts the opening the
// first time, and says false once it is done (or there is no pool to
// open). The caller holds m.mu.
func (m *Monitor) rejoining(name string) bool {
	w := m.warms[name]
	if w == nil || w.done || m.stopped {
		return false
	}
	db := w.db
	if !w.running {
		w.running = true
		gen := w.gen
		base := m.runCtx
		if base == nil {
			base = context.Background() // a Poll before Run
		}
		m.warming.Go(func() {
			ctx, cancel := context.WithTimeout(internal(base), warmTimeout)
			defer cancel()
			want := db.Stats().MaxOpenConnections
			if want <= 0 {
				want = DefaultMaxConns
			}
			opened, err := warm(ctx, db, want)
			m.mu.Lock()
			defer m.mu.Unlock()
			if w.gen == gen {
				w.running, w.done = false, true
			}
			if opened < want {
				m.logger.Warn("replica rejoins with its read pool partly open", "replica", name, "opened", opened, "want", want, "err", err)
			} else {
				m.logger.Info("replica's read pool opened before it rejoins", "replica", name, "opened", opened)
			}
		})
	}
	return true
}

// takeOut marks a replica out of rotation for cause, logging the
// transition once, and, if flap, quarantines it when it flaps. The caller
// holds m.mu.
func (m *Monitor) takeOut(name, msg string, cause error, now time.Time, flap bool) {
	prev := m.status[name]
	if w := m.warms[name]; w != nil && (w.done || w.running) {
		// Its pool is opened again when it comes back.
		*w = warmUp{db: w.db, gen: w.gen + 1}
	}
	st := ReplicaStatus{Name: name, Error: cause.Error(), CheckedAt: now, RTT: prev.RTT, RTTMs: prev.RTTMs, TakenOut: prev.TakenOut}
	if prev.Healthy {
		st.TakenOut++
		hold := time.Duration(0)
		if flap {
			hold = m.quarantine[name].down(now)
		}
		if hold > 0 {
			m.logger.Warn(msg+"; quarantined, it flaps", "replica", name, "err", cause, "for", hold)
		} else {
			m.logger.Warn(msg, "replica", name, "err", cause)
		}
	}
	if q := m.quarantine[name]; q.held(now) {
		st.Quarantined, st.QuarantinedUntil = true, q.until
	}
	m.status[name] = st
}

// statusAt describes a healthy replica that has replayed lsn, as of now.
// The caller holds m.mu.
func (m *Monitor) statusAt(name string, lsn LSN, now time.Time) ReplicaStatus {
	st := ReplicaStatus{Name: name, Healthy: true, ReplayLSN: lsn, CheckedAt: now}
	n := len(m.samples)
	if n == 0 || lsn >= m.samples[n-1].lsn {
		return st
	}
	st.LagBytes = uint64(m.samples[n-1].lsn - lsn)
	// The replica is fresh up to the last moment the primary was seen at or
	// below its position; it has lagged since then.
	i := sort.Search(n, func(i int) bool { return m.samples[i].lsn > lsn })
	if i > 0 {
		st.Lag = now.Sub(m.samples[i-1].last)
	} else {
		st.Lag = now.Sub(m.samples[0].first)
	}
	st.LagSeconds = st.Lag.Seconds()
	return st
}

// Behind records that a connection found the replica at lsn, behind its
// known position (it restarted and is replaying again): the known position
// must never overstate what its queries see.
func (m *Monitor) Behind(name string, lsn LSN) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.status[name]
	if !ok || !st.Healthy || lsn >= st.ReplayLSN {
		return
	}
	m.logger.Warn("replica is behind its known position; lowering it", "replica", name, "known", st.ReplayLSN, "seen", lsn)
	next := m.statusAt(name, lsn, m.now())
	next.RTT, next.RTTMs, next.Timeline, next.TakenOut = st.RTT, st.RTTMs, st.Timeline, st.TakenOut
	m.status[name] = next
	m.moved[name] = next.CheckedAt
}

// Saw records that a read on the replica, started at at, found it at pos
// (a measured read's position, see measure.go): replay only moves forward,
// so its known position rises to it, without a poll. A read that started
// before the replica's last check says nothing newer (the check may have
// seen it restarted and behind); positions of another timeline than the
// one it was last checked on are left to the next check.
func (m *Monitor) Saw(name string, pos Position, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.status[name]
	if !ok || !st.Healthy || pos.LSN <= st.ReplayLSN || at.Before(st.CheckedAt) || (pos.Timeline != 0 && pos.Timeline != st.Timeline) {
		return
	}
	next := m.statusAt(name, pos.LSN, m.now())
	next.RTT, next.RTTMs, next.Timeline, next.TakenOut = st.RTT, st.RTTMs, st.Timeline, st.TakenOut
	m.status[name] = next
	m.moved[name] = next.CheckedAt
}

// MarkDown takes a replica out of rotation after a query on it failed; the
// next successful check puts it back.
func (m *Monitor) MarkDown(name string, cause error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.status[name]; !ok {
		return
	}
	// A query that overran its deadline may have waited for a pooled
	// connection, or been a slow query on a busy, healthy node: it takes the
	// replica out until its next good check, but does not count as flapping.
	m.takeOut(name, "replica out of rotation: a query on it failed", cause, m.now(), !errors.Is(cause, context.DeadlineExceeded))
}

// Status returns every replica's status, in configuration order.
func (m *Monitor) Status() []ReplicaStatus {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]ReplicaStatus, 0, len(m.replicas))
	for _, r := range m.replicas {
		out = append(out, m.status[r.Name])
	}
	return out
}

// RequiredLSN returns a WAL position at or past every commit that completed
// before t: a replica that has replayed it shows all of them. ok is false
// when t is more recent than the primary's last known position, so that
// nothing can be promised.
func (m *Monitor) RequiredLSN(t time.Time) (LSN, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i := sort.Search(len(m.samples), func(i int) bool { return !m.samples[i].last.Before(t) })
	if i == len(m.samples) {
		return 0, false
	}
	return m.samples[i].lsn, true
}

// CaughtUp returns the healthy replicas known to have replayed at least
// min (every healthy replica for min 0), in configuration order.
//
// Replicas that answer much more slowly than the fastest of them (over four
// times its round trip, and by more than slowMargin) are left out while a
// faster one qualifies: a replica with a slow link would make every read it
// serves slow, and can serve when nothing else can.
func (m *Monitor) CaughtUp(min LSN) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var names []string
	fastest := time.Duration(-1)
	for _, r := range m.replicas {
		if st := m.status[r.Name]; m.current(st) && st.ReplayLSN >= min {
			names = append(names, r.Name)
			if st.RTT > 0 && (fastest < 0 || st.RTT < fastest) {
				fastest = st.RTT
			}
		}
	}
	if len(names) < 2 || fastest < 0 {
		return names
	}
	fast := names[:0:0]
	for _, n := range names {
		if rtt := m.status[n].RTT; rtt <= 4*fastest || rtt-fastest <= slowMargin {
			fast = append(fast, n)
		}
	}
	return fast
}

// Following returns the healthy replicas that keep up with the primary:
// not stalled (see Refresh), and lagging no more than four polls at their
// last check. One of them has most likely replayed a position the primary
// reached a moment ago, though its known position may not say so yet.
func (m *Monitor) Following() []string {
	names := m.CaughtUp(0)
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.DeleteFunc(names, func(n string) bool { return m.status[n].Lag > 4*m.interval || m.stalledLocked(n) })
}

// slowMargin is how much slower than the fastest replica a replica may
// answer and still share the reads.
const slowMargin = 10 * time.Millisecond
