package ryw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fakeTracker is an in-memory Tracker that can be made to fail.
type fakeTracker struct {
	marks map[string]Marks
	err   error
	calls int
	timed int // lookups that asked for the time mark
}

func newFakeTracker() *fakeTracker { return &fakeTracker{marks: map[string]Marks{}} }

func (f *fakeTracker) Record(_ context.Context, user string, token Position) (Position, error) {
	f.calls++
	if f.err != nil {
		return Position{}, f.err
	}
	m := f.marks[user]
	prev := m.Token
	m.Token = Later(m.Token, token)
	m.WrittenAt, m.Age = t0, 0
	f.marks[user] = m
	return prev, nil
}

func (f *fakeTracker) Repair(_ context.Context, user string, lost, to Position) (bool, error) {
	m := f.marks[user]
	if m.Token != lost {
		return false, nil
	}
	m.Token = to
	f.marks[user] = m
	return true, nil
}

// Lookup returns the time mark only when asked for it, as RedisTracker
// does, and counts the lookups that asked.
func (f *fakeTracker) Lookup(_ context.Context, user string, withTime bool) (Marks, error) {
	if withTime {
		f.timed++
	}
	if f.err != nil {
		return Marks{}, f.err
	}
	m := f.marks[user]
	if !withTime {
		m.WrittenAt, m.Age = time.Time{}, 0
	}
	return m, nil
}

// fakeReplicas models a primary whose WAL position grows by one per
// millisecond from t0, and replicas that have replayed some position.
type fakeReplicas struct {
	replay    map[string]LSN // absent: unhealthy
	order     []string
	down      []string
	refreshed atomic.Int32
	// fresh is what the replicas have replayed by now, which a Refresh
	// learns (absent: what replay says).
	fresh     map[string]LSN
	fence     LSN
	fenceAsOf time.Time
	cluster   Cluster
	// following are the replicas that keep up (see Following).
	following []string
}

func (f *fakeReplicas) Following() []string { return f.following }

func lsnAt(t time.Time) LSN { return LSN(1_000_000 + t.Sub(t0).Milliseconds()) }

func (f *fakeReplicas) CaughtUp(min LSN) []string {
	var out []string
	for _, n := range f.order {
		if l, ok := f.replay[n]; ok && l >= min {
			out = append(out, n)
		}
	}
	return out
}

func (f *fakeReplicas) AllCaughtUp(min LSN) bool {
	return len(f.CaughtUp(min)) == len(f.order)
}

func (f *fakeReplicas) RequiredLSN(t time.Time) (LSN, bool) { return lsnAt(t), true }

func (f *fakeReplicas) PrimaryLSN() LSN { return lsnAt(t0.Add(time.Hour)) }

func (f *fakeReplicas) PrimaryPosition() Position {
	return Position{System: f.cluster.System, Timeline: f.cluster.Timeline, LSN: f.PrimaryLSN()}
}

func (f *fakeReplicas) Fence() (LSN, time.Time) { return f.fence, f.fenceAsOf }

func (f *fakeReplicas) Refresh(_ context.Context, names []string) {
	f.refreshed.Add(1)
	for _, n := range names {
		if l, ok := f.fresh[n]; ok {
			f.replay[n] = l
		}
	}
}

func (f *fakeReplicas) MarkDown(name string, _ error) {
	f.down = append(f.down, name)
	delete(f.replay, name)
}

func (f *fakeReplicas) Behind(name string, lsn LSN) { f.replay[name] = lsn }

func (f *fakeReplicas) Cluster() Cluster { return f.cluster }

func (f *fakeReplicas) Saw(name string, p Position, _ time.Time) {
	if l, ok := f.replay[name]; ok {
		f.replay[name] = max(l, p.LSN)
	}
}

// fakeWAL is a primary at a fixed position whose fence can be made to fail.
type fakeWAL struct {
	at LSN
	// server names the server positions are read on; the first
	// positionFailures reads fail.
	server           string
	positionFailures int
	positionCalls    int
	system           string
	timeline         int
	ends             map[int]LSN
	fence            LSN
	fenceErr         error
	// acked is the fence the instances acknowledge (0: none yet); ackedAt,
	// if set, moves it to the fence on the ackedAt-th question.
	acked     LSN
	ackedAt   int
	ackAsks   int
	ackedTime int // the timeline the acknowledgements are on
}

func (w *fakeWAL) CurrentLSN(context.Context) (LSN, error) { return w.at, nil }

func (w *fakeWAL) CurrentPosition(context.Context) (Position, string, error) {
	w.positionCalls++
	if w.positionCalls <= w.positionFailures {
		return Position{}, "", errors.New("connection refused")
	}
	return Position{System: w.system, Timeline: w.timeline, LSN: w.at}, w.server, nil
}

func (w *fakeWAL) History(context.Context, int) (map[int]LSN, error) { return w.ends, nil }

func (w *fakeWAL) AcknowledgedFence(_ context.Context, timeline int) (LSN, error) {
	w.ackAsks++
	if w.ackedAt > 0 && w.ackAsks >= w.ackedAt {
		w.acked = w.fence
	}
	if timeline != w.ackedTime {
		return 0, nil
	}
	return w.acked, nil
}

func (w *fakeWAL) RaiseFence(_ context.Context, lsn LSN) error {
	if w.fenceErr != nil {
		return w.fenceErr
	}
	w.fence = max(w.fence, lsn)
	return nil
}

// pos is a position without a timeline, as before positions carried one.
func pos(l LSN) Position { return Position{LSN: l} }

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

const testTTL = 10 * time.Minute

func newTestRouter(mode Mode, tr *fakeTracker, reps *fakeReplicas, wal *fakeWAL, now *time.Time) *Router {
	if reps.replay == nil {
		reps.replay = map[string]LSN{}
	}
	if wal == nil {
		wal = &fakeWAL{at: lsnAt(*now)}
	}
	return NewRouter(RouterConfig{
		Mode: mode, Window: 5 * time.Second, MarkerTTL: testTTL, Tracker: tr, View: reps, WAL: wal,
		FenceLease: time.Second, RecordBudget: time.Second, Now: func() time.Time { return *now },
	})
}

func TestOwnReadRouting(t *testing.T) {
	down := errors.New("redis: connection refused")
	now := t0.Add(time.Hour)
	at := func(ago time.Duration) LSN { return lsnAt(now.Add(-ago)) }
	tests := []struct {
		name     string
		mode     Mode
		marks    Marks
		trackErr error
		client   LSN
		fence    LSN
		fenceAge time.Duration
		fresh    map[string]time.Duration // replica -> fresh up to now minus this
		// onReplicas sets UnknownWritesOnReplicas.
		onReplicas bool
		want       Decision
	}{
		{name: "time: inside the window", mode: ModeTime, marks: Marks{Token: pos(at(2 * time.Second)), Age: 2 * time.Second},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonRecentWrite, MinLSN: 0}},
		{name: "time: a time mark without a token", mode: ModeTime, marks: Marks{WrittenAt: t0, Age: time.Minute},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonRecentWrite, MinLSN: 0}},
		{name: "time: outside the window, routed by the token", mode: ModeTime, marks: Marks{Token: pos(at(6 * time.Second)), Age: 6 * time.Second},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonNoRecentWrite, MinLSN: at(6 * time.Second)}},
		{name: "time: outside the window, replica behind the token", mode: ModeTime, marks: Marks{Token: pos(at(6 * time.Second)), Age: 6 * time.Second},
			fresh: map[string]time.Duration{"r1": 7 * time.Second}, want: Decision{Node: Primary, Reason: ReasonReplicasBehind, MinLSN: 0}},
		{name: "time: only the replica past the token", mode: ModeTime, marks: Marks{Token: pos(at(6 * time.Second)), Age: 6 * time.Second},
			fresh: map[string]time.Duration{"r1": 7 * time.Second, "r2": time.Second}, want: Decision{Node: "r2", Reason: ReasonNoRecentWrite, MinLSN: at(6 * time.Second)}},
		{name: "time: no marks, held to the lag bound", mode: ModeTime,
			fresh: map[string]time.Duration{"r1": time.Minute}, want: Decision{Node: "r1", Reason: ReasonNoRecentWrite, MinLSN: at(9 * time.Minute)}},
		{name: "lsn: no marks, replica beyond the lag bound", mode: ModeLSN,
			fresh: map[string]time.Duration{"r1": 9*time.Minute + time.Second}, want: Decision{Node: Primary, Reason: ReasonReplicasBehind, MinLSN: 0}},
		{name: "lsn: caught up", mode: ModeLSN, marks: Marks{Token: pos(at(time.Second))},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonLSNCaughtUp, MinLSN: at(time.Second)}},
		{name: "lsn: the client's token is higher", mode: ModeLSN, marks: Marks{Token: pos(at(time.Minute))}, client: at(time.Second),
			fresh: map[string]time.Duration{"r1": 2 * time.Second, "r2": 0}, want: Decision{Node: "r2", Reason: ReasonLSNCaughtUp, MinLSN: at(time.Second)}},
		{name: "lsn: the tracker's floor after a loss", mode: ModeLSN, marks: Marks{Floor: at(time.Second)},
			fresh: map[string]time.Duration{"r1": 2 * time.Second, "r2": 0}, want: Decision{Node: "r2", Reason: ReasonNoToken, MinLSN: at(time.Second)}},
		{name: "lsn: the fence", mode: ModeLSN, marks: Marks{Token: pos(at(time.Minute))}, fence: at(time.Second),
			fresh: map[string]time.Duration{"r1": 2 * time.Second, "r2": 0}, want: Decision{Node: "r2", Reason: ReasonLSNCaughtUp, MinLSN: at(time.Second)}},
		{name: "lsn: a fence older than the lease", mode: ModeLSN, marks: Marks{Token: pos(at(time.Minute))}, fenceAge: time.Second,
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonFenceUnknown, MinLSN: 0}},
		// Writes unknown: the primary, in every mode; with
		// UnknownWritesOnReplicas, lsn mode needs a replica at the primary's
		// position when the read arrived (the fake primary is at now).
		{name: "lsn: marks that Redis may evict", mode: ModeLSN, marks: Marks{Unreliable: true},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		{name: "lsn on replicas: marks that Redis may evict", mode: ModeLSN, marks: Marks{Unreliable: true}, onReplicas: true,
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonTrackerUnavailable, MinLSN: at(0)}},
		{name: "lsn on replicas: Redis may have evicted the token", mode: ModeLSN, marks: Marks{Unreliable: true, WrittenAt: t0}, onReplicas: true,
			fresh: map[string]time.Duration{"r1": time.Second, "r2": 0}, want: Decision{Node: "r2", Reason: ReasonTrackerUnavailable, MinLSN: at(0)}},
		{name: "lsn: Redis may evict, the token is there", mode: ModeLSN, marks: Marks{Unreliable: true, Token: pos(at(time.Second))},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonLSNCaughtUp, MinLSN: at(time.Second)}},
		{name: "time: Redis may have evicted the time mark", mode: ModeTime, marks: Marks{Unreliable: true, Token: pos(at(time.Minute))},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		// Lsn mode does not read the time mark (see
		// TestOnlyTimeModeReadsTheTimeMark): a recent write time is not
		// looked at, the token and the floors route.
		{name: "lsn: the time mark is not read", mode: ModeLSN, marks: Marks{WrittenAt: now, Token: pos(at(time.Second))},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonLSNCaughtUp, MinLSN: at(time.Second)}},
		{name: "lsn: tracker down", mode: ModeLSN, trackErr: down,
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		{name: "lsn on replicas: tracker down", mode: ModeLSN, trackErr: down, onReplicas: true,
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonTrackerUnavailable, MinLSN: at(0)}},
		{name: "lsn on replicas: tracker down, an old client token does not lower the need", mode: ModeLSN, trackErr: down, client: at(time.Minute), onReplicas: true,
			fresh: map[string]time.Duration{"r1": time.Second}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		{name: "time: tracker down, even with a client token", mode: ModeTime, trackErr: down, client: at(time.Minute),
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		{name: "time: marks that Redis may evict", mode: ModeTime, marks: Marks{Unreliable: true},
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: Primary, Reason: ReasonTrackerUnavailable, MinLSN: 0}},
		{name: "no healthy replica", mode: ModeLSN, marks: Marks{Token: pos(at(time.Minute))},
			want: Decision{Node: Primary, Reason: ReasonNoReplica, MinLSN: 0}},
		{name: "off ignores the write", mode: ModeOff, marks: Marks{Token: pos(at(0))},
			fresh: map[string]time.Duration{"r1": time.Hour}, want: Decision{Node: "r1", Reason: ReasonRYWOff, MinLSN: 0}},
		{name: "off ignores the tracker", mode: ModeOff, trackErr: down,
			fresh: map[string]time.Duration{"r1": 0}, want: Decision{Node: "r1", Reason: ReasonRYWOff, MinLSN: 0}},
		{name: "off without replicas", mode: ModeOff, want: Decision{Node: Primary, Reason: ReasonNoReplica, MinLSN: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newFakeTracker()
			tr.err = tt.trackErr
			tr.marks["u"] = tt.marks
			reps := &fakeReplicas{replay: map[string]LSN{}, fence: tt.fence, fenceAsOf: now.Add(-tt.fenceAge)}
			for _, n := range []string{"r1", "r2"} {
				if d, ok := tt.fresh[n]; ok {
					reps.replay[n] = at(d)
					reps.order = append(reps.order, n)
				}
			}
			ctx := t.Context()
			if tt.client > 0 {
				ctx = WithClientSession(ctx, Session{Write: pos(tt.client)})
			}
			r := newTestRouter(tt.mode, tr, reps, nil, &now)
			r.cfg.UnknownWritesOnReplicas = tt.onReplicas
			got := r.ForOwnRead(ctx, "u")
			if got != tt.want {
				t.Errorf("ForOwnRead = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOnlyTimeModeReadsTheTimeMark: lsn mode routes by positions alone,
// so its lookups leave the time mark in Redis; time mode's window needs it.
func TestOnlyTimeModeReadsTheTimeMark(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tt := range []struct {
		mode  Mode
		timed int
	}{{ModeTime, 1}, {ModeLSN, 0}, {ModeOff, 0}} {
		tr := newFakeTracker()
		reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}, fenceAsOf: now}
		newTestRouter(tt.mode, tr, reps, nil, &now).ForOwnRead(t.Context(), "u")
		if tr.timed != tt.timed {
			t.Errorf("%s mode: %d lookups asked for the time mark, want %d", tt.mode, tr.timed, tt.timed)
		}
	}
}

func TestClientTokensAheadOfThePrimaryAreIgnored(t *testing.T) {
	now := t0.Add(time.Hour)
	tr := newFakeTracker()
	tr.marks["u"] = Marks{Token: pos(lsnAt(now.Add(-time.Second)))}
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}, fenceAsOf: now}
	r := newTestRouter(ModeLSN, tr, reps, nil, &now)
	for _, client := range []LSN{lsnAt(now) + 1, ^LSN(0)} {
		d := r.ForOwnRead(WithClientSession(t.Context(), Session{Write: pos(client)}), "u")
		if d != (Decision{Node: "r1", Reason: ReasonLSNCaughtUp, MinLSN: lsnAt(now.Add(-time.Second))}) {
			t.Errorf("client token %s ahead of the primary (%s): %+v; want it ignored", client, lsnAt(now), d)
		}
	}
	if n := r.Counts().IgnoredTokens[TokenAhead]; n != 2 {
		t.Errorf("ignored tokens counted %d, want 2", n)
	}
	// A token the primary has reached is routed on.
	if d := r.ForOwnRead(WithClientSession(t.Context(), Session{Write: pos(lsnAt(now))}), "u"); d.MinLSN != lsnAt(now) {
		t.Errorf("a reachable client token: %+v", d)
	}
}

func TestStaleReadAndWrite(t *testing.T) {
	now := t0
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now.Add(-time.Hour))}, order: []string{"r1"}, fenceAsOf: now}
	r := newTestRouter(ModeTime, newFakeTracker(), reps, nil, &now)
	if d := r.ForStaleRead(t.Context()); d != (Decision{Node: "r1", Reason: ReasonStaleOK, MinLSN: 0}) {
		t.Errorf("ForStaleRead = %+v: any healthy replica, however stale", d)
	}
	if d := r.ForWrite(t.Context()); d != (Decision{Node: Primary, Reason: ReasonWrite}) {
		t.Errorf("ForWrite = %+v", d)
	}
	delete(reps.replay, "r1")
	if d := r.ForStaleRead(t.Context()); d != (Decision{Node: Primary, Reason: ReasonNoReplica}) {
		t.Errorf("ForStaleRead without replicas = %+v", d)
	}
	// The primary unconfirmed for the lease: no replica is known to be on
	// the history a failover will keep; unless availability was chosen.
	reps.replay["r1"] = lsnAt(now)
	reps.fenceAsOf = now.Add(-time.Second)
	if d := r.ForStaleRead(t.Context()); d.Node != Primary || d.Reason != ReasonFenceUnknown {
		t.Errorf("ForStaleRead, primary unconfirmed = %+v; want the primary, fence-unknown", d)
	}
	r.cfg.StaleReadsWithoutPrimary = true
	if d := r.ForStaleRead(t.Context()); d.Node != "r1" {
		t.Errorf("ForStaleRead, primary unconfirmed, StaleReadsWithoutPrimary = %+v; want r1", d)
	}
}

func TestRecordWriteRecordsTheTokenInBothModes(t *testing.T) {
	for _, mode := range []Mode{ModeTime, ModeLSN} {
		now := t0
		tr := newFakeTracker()
		wal := &fakeWAL{at: 0x5_00000010}
		r := newTestRouter(mode, tr, &fakeReplicas{}, wal, &now)
		ctx, obs := WithObservation(t.Context())
		if err := r.RecordWrite(ctx, "u"); err != nil {
			t.Fatal(err)
		}
		if tr.marks["u"].Token.LSN != wal.at || obs.Token().LSN != wal.at || obs.Reason() != "" || wal.fence != 0 {
			t.Errorf("%s: recorded %s, observed token %s reason %q, fence %s; want %s in the tracker and the response, no fence",
				mode, tr.marks["u"].Token, obs.Token(), obs.Reason(), wal.fence, wal.at)
		}
	}
}

func TestRecordWriteRaisesTheFenceWhenTheTrackerFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		attempts int
	}{
		{"redis times out", errors.New("redis: i/o timeout"), recordAttempts},
		// A shedding tracker sheds for longer than the back-off: one try.
		{"the tracker sheds calls", fmt.Errorf("record: %w", ErrTrackerShedding), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			tr := newFakeTracker()
			tr.err = tc.err
			wal := &fakeWAL{at: 0x5_00000010}
			// replica r1 lags behind the write, so the writer must wait the lease.
			reps := &fakeReplicas{replay: map[string]LSN{"r1": 0x4_00000000}, order: []string{"r1"}}
			r := NewRouter(RouterConfig{
				Mode: ModeLSN, MarkerTTL: testTTL, Tracker: tr, View: reps, WAL: wal,
				FenceLease: time.Second, RecordBudget: time.Minute,
				// Each look at the clock moves it 100 ms on.
				Now: func() time.Time {
					now = now.Add(100 * time.Millisecond)
					return now
				},
			})
			ctx, obs := WithObservation(t.Context())
			start := now
			if err := r.RecordWrite(ctx, "u"); err != nil {
				t.Fatalf("RecordWrite = %v; want the write secured by the fence", err)
			}
			if tr.calls != tc.attempts {
				t.Errorf("tracker tried %d times, want %d", tr.calls, tc.attempts)
			}
			if wal.fence != wal.at || obs.Reason() != ReasonWriteFenced || obs.Token().LSN != wal.at {
				t.Errorf("fence %s, reason %q, token %s; want the fence at the token and reason write-fenced", wal.fence, obs.Reason(), obs.Token())
			}
			if waited := now.Sub(start); waited < 1100*time.Millisecond {
				t.Errorf("answered %s after the fence; want at least the lease and a tenth", waited)
			}
		})
	}
}

// A fenced write asks the replicas behind it for their position instead
// of waiting for the monitor's next poll: one that has replayed the write
// by then ends the wait before the lease.
func TestFencedWriteAsksTheReplicasBehindIt(t *testing.T) {
	wal := &fakeWAL{at: 0x5_00000010}
	// The monitor last saw r1 behind the write; r1 has replayed it since.
	reps := &fakeReplicas{replay: map[string]LSN{"r1": 0x4_00000000, "r2": 0x5_00000010}, order: []string{"r1", "r2"},
		fresh: map[string]LSN{"r1": 0x5_00000020}}
	if waited := fencedWrite(t, reps, wal, false); waited >= time.Second {
		t.Errorf("answered %s after the fence, the whole lease; want as soon as r1 said it had the write", waited)
	}
	if reps.refreshed.Load() == 0 {
		t.Error("the replicas behind the write were not asked for their position")
	}
}

// fencedWrite records a write of user u in lsn mode through a router whose
// tracker sheds every call, so that the write is fenced (lease 1 s, the
// clock a millisecond on at each look), and returns how long it waited
// after the fence.
func fencedWrite(t *testing.T, reps *fakeReplicas, wal *fakeWAL, noFenceAcks bool) time.Duration {
	t.Helper()
	now := t0
	tr := newFakeTracker()
	tr.err = fmt.Errorf("record: %w", ErrTrackerShedding)
	r := NewRouter(RouterConfig{
		Mode: ModeLSN, MarkerTTL: testTTL, Tracker: tr, View: reps, WAL: wal,
		FenceLease: time.Second, RecordBudget: time.Minute, NoFenceAcks: noFenceAcks,
		Now: func() time.Time {
			now = now.Add(time.Millisecond)
			return now
		},
	})
	ctx, obs := WithObservation(t.Context())
	start := now
	if err := r.RecordWrite(ctx, "u"); err != nil || obs.Reason() != ReasonWriteFenced {
		t.Fatalf("RecordWrite = %v, reason %q; want the write secured by the fence", err, obs.Reason())
	}
	return now.Sub(start)
}

// A fenced write is answered once every instance has acknowledged its
// fence, before the lease, but only acknowledgements on its own timeline
// count, and none when the fence must wait out the lease.
func TestFencedWriteEndsWhenEveryInstanceAcknowledgesIt(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ackedOn    int
		waitsLease bool
		early      bool
	}{
		{"acknowledged on the write's timeline", 2, false, true},
		{"acknowledged on an earlier timeline", 1, false, false},
		{"the fence waits out the lease", 2, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The instances acknowledge the fence at the third question.
			wal := &fakeWAL{at: 0x5_00000010, timeline: 2, ackedTime: tc.ackedOn, ackedAt: 3}
			// r1 is paused behind the write: only the lease or the
			// acknowledgements can end the wait.
			reps := &fakeReplicas{replay: map[string]LSN{"r1": 0x4_00000000}, order: []string{"r1"}}
			waited := fencedWrite(t, reps, wal, tc.waitsLease)
			switch {
			case tc.early && (waited >= time.Second || wal.ackAsks < 3):
				t.Errorf("answered %s after the fence, after %d questions; want at the third, before the lease", waited, wal.ackAsks)
			case !tc.early && waited < 1100*time.Millisecond:
				t.Errorf("answered %s after the fence; want the lease and a tenth", waited)
			case tc.waitsLease && wal.ackAsks > 0:
				t.Errorf("asked for acknowledgements %d times; want none", wal.ackAsks)
			}
		})
	}
}

func TestRecordWriteWithoutTrackerOrFenceWaitsForEveryReplica(t *testing.T) {
	now := t0
	tr := newFakeTracker()
	tr.err = errors.New("redis down")
	wal := &fakeWAL{at: 0x5_00000010, fenceErr: errors.New("primary gone")}
	reps := &fakeReplicas{replay: map[string]LSN{"r1": 0x5_00000010}, order: []string{"r1"}}
	r := newTestRouter(ModeLSN, tr, reps, wal, &now)
	ctx, obs := WithObservation(t.Context())
	if err := r.RecordWrite(ctx, "u"); err != nil || obs.Reason() != ReasonWriteFenced {
		t.Errorf("every replica has the write: RecordWrite = %v, reason %q; want it secured", err, obs.Reason())
	}
	reps.replay["r1"] = 0x4_00000000
	if err := r.RecordWrite(t.Context(), "u"); !errors.Is(err, ErrUnconfirmed) {
		t.Errorf("a replica lacks the write: RecordWrite = %v; want ErrUnconfirmed", err)
	}
}

func TestReadRetriesOnThePrimary(t *testing.T) {
	now := t0
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, newFakeTracker(), reps, nil, &now)
	unreachable := fmt.Errorf("query: %w", errors.Join(errors.New("x"), errUnexpectedEOF()))

	ctx, obs := WithObservation(WithDecision(t.Context(), Decision{Node: "r1", Reason: ReasonStaleOK}))
	var ran []string
	err := r.Read(ctx, func(ctx context.Context) error {
		d, _ := DecisionFrom(ctx)
		ran = append(ran, d.Node)
		if d.Node == "r1" {
			return unreachable
		}
		return nil
	})
	if err != nil || fmt.Sprint(ran) != "[r1 primary]" {
		t.Errorf("Read = %v after running on %v; want success after r1 then primary", err, ran)
	}
	if fmt.Sprint(reps.down) != "[r1]" || obs.Reason() != ReasonReplicaFailed {
		t.Errorf("marked down %v, observed reason %q", reps.down, obs.Reason())
	}

	// A replica that restarted before the schema existed is behind: the
	// read is retried on the primary, and the replica stays in rotation.
	ran = nil
	ctx, obs = WithObservation(WithDecision(t.Context(), Decision{Node: "r1", Reason: ReasonStaleOK}))
	reps.replay["r1"] = lsnAt(now)
	err = r.Read(ctx, func(ctx context.Context) error {
		d, _ := DecisionFrom(ctx)
		ran = append(ran, d.Node)
		if d.Node == "r1" {
			return &pgconn.PgError{Code: "42P01", Message: `relation "users" does not exist`}
		}
		return nil
	})
	if err != nil || fmt.Sprint(ran) != "[r1 primary]" || obs.Reason() != ReasonReplicaBehind || len(reps.down) != 1 {
		t.Errorf("Read = %v after %v, reason %q, down %v; want a retry on the primary, r1 not marked down again", err, ran, obs.Reason(), reps.down)
	}

	// A query error that is the query's fault is not retried.
	ran = nil
	bad := errors.New("syntax error")
	err = r.Read(WithDecision(t.Context(), Decision{Node: "r2", Reason: ReasonStaleOK}), func(ctx context.Context) error {
		d, _ := DecisionFrom(ctx)
		ran = append(ran, d.Node)
		return bad
	})
	if !errors.Is(err, bad) || len(ran) != 1 {
		t.Errorf("Read = %v after %v; want the error, once", err, ran)
	}
}

func errUnexpectedEOF() error { return fmt.Errorf("read: %w", io.ErrUnexpectedEOF) }

// gatedWAL answers CurrentLSN with the position at the moment it was
// asked, once the test lets it.
type gatedWAL struct {
	fakeWAL
	pos   atomic.Uint64
	gate  chan struct{}
	calls atomic.Int32
}

func (w *gatedWAL) CurrentLSN(context.Context) (LSN, error) {
	w.calls.Add(1)
	at := LSN(w.pos.Load())
	<-w.gate
	return at, nil
}

// Reads whose user's writes are unknown share the primary's position
// query, but only one asked after they arrived: a write acknowledged
// before a read arrived must be in the position it is routed by.
func TestUnknownWritesShareOnlyAPositionAskedAfterTheyArrived(t *testing.T) {
	wal := &gatedWAL{gate: make(chan struct{})}
	wal.pos.Store(100)
	r := NewRouter(RouterConfig{Mode: ModeLSN, MarkerTTL: testTTL, Tracker: newFakeTracker(), View: &fakeReplicas{}, WAL: wal})
	first := make(chan LSN, 1)
	go func() {
		l, _ := askAfter(t.Context(), r, &r.nowPositions, "", r.asked.Load(), &r.lastNow, r.cfg.WAL.CurrentLSN)
		first <- l
	}()
	for wal.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// A write is acknowledged while the first question is on its way; then
	// a read arrives.
	wal.pos.Store(200)
	second := make(chan LSN, 1)
	go func() {
		l, _ := askAfter(t.Context(), r, &r.nowPositions, "", r.asked.Load(), &r.lastNow, r.cfg.WAL.CurrentLSN)
		second <- l
	}()
	time.Sleep(20 * time.Millisecond) // let it join the first question, if it would
	close(wal.gate)
	if a, b := <-first, <-second; a != 100 || b != 200 {
		t.Errorf("positions: first read %s, second %s; want 0/64 and 0/C8, the second from a question asked after it arrived", a, b)
	}
	if n := wal.calls.Load(); n != 2 {
		t.Errorf("%d position queries; want 2", n)
	}
	// A read that arrived before a question was asked (it was waiting for
	// Redis, say) takes that question's answer, without asking; one that
	// arrives after it asks again.
	early := r.asked.Load()
	wal.pos.Store(300)
	if l, _ := askAfter(t.Context(), r, &r.nowPositions, "", r.asked.Load(), &r.lastNow, r.cfg.WAL.CurrentLSN); l != 300 {
		t.Fatalf("position = %s; want 0/12C", l)
	}
	wal.pos.Store(400)
	if l, _ := askAfter(t.Context(), r, &r.nowPositions, "", early, &r.lastNow, r.cfg.WAL.CurrentLSN); l != 300 || wal.calls.Load() != 3 {
		t.Errorf("a read that arrived before the third question: position %s after %d queries; want its answer, 0/12C, after 3", l, wal.calls.Load())
	}
	if l, _ := askAfter(t.Context(), r, &r.nowPositions, "", r.asked.Load(), &r.lastNow, r.cfg.WAL.CurrentLSN); l != 400 || wal.calls.Load() != 4 {
		t.Errorf("a read that arrived after the third question: position %s after %d queries; want 0/190 from a fourth", l, wal.calls.Load())
	}
}

// With MaxWait 0, an lsn-mode read that no replica is known to have
// replayed goes to a replica that keeps up with the primary, hopefully:
// its connection's check asks it. Found behind, the read goes to the
// primary as replicas-behind, not counted as a retry after a failure.
// Control: a read not sent hopefully that finds its replica behind is a
// replica-behind retry.
func TestHopefulReadsGoToAReplicaThatKeepsUp(t *testing.T) {
	now := t0.Add(time.Hour)
	need := lsnAt(now)
	tr := newFakeTracker()
	tr.marks["u"] = Marks{Token: pos(need)}
	reps := &fakeReplicas{replay: map[string]LSN{"r1": need - 10, "r2": need - 10_000}, order: []string{"r1", "r2"}, following: []string{"r1"}, fenceAsOf: now}
	r := newTestRouter(ModeLSN, tr, reps, nil, &now)
	r.cfg.CheckedReplicas = true
	d := r.ForOwnRead(t.Context(), "u")
	if d.Node != "r1" || !d.hopeful || d.MinLSN != need || d.Reason != ReasonLSNCaughtUp {
		t.Fatalf("ForOwnRead = %+v; want r1, which keeps up, hopefully, at the token", d)
	}
	for _, hopeful := range []bool{true, false} {
		d.hopeful = hopeful
		ctx, obs := WithObservation(WithDecision(t.Context(), d))
		var ran []string
		err := r.Read(ctx, func(ctx context.Context) error {
			got, _ := DecisionFrom(ctx)
			ran = append(ran, got.Node)
			if got.Node == "r1" {
				return &BehindError{Replayed: need - 5, Need: need}
			}
			return nil
		})
		retries := r.counts.snapshot().Retries
		switch {
		case err != nil || fmt.Sprint(ran) != "[r1 primary]":
			t.Errorf("hopeful %v: Read = %v, ran on %v; want r1, then the primary", hopeful, err, ran)
		case hopeful && (obs.Reason() != ReasonReplicasBehind || retries[ReasonReplicaBehind] != 0):
			t.Errorf("hopeful: reason %q, retries %v; want replicas-behind, no retry", obs.Reason(), retries)
		case !hopeful && (obs.Reason() != ReasonReplicaBehind || retries[ReasonReplicaBehind] != 1):
			t.Errorf("control: reason %q, retries %v; want a replica-behind retry", obs.Reason(), retries)
		}
	}
	// Another replica that keeps up is tried once before the primary.
	reps.following = []string{"r1", "r2"}
	d.hopeful = true
	for _, r2behind := range []bool{false, true} {
		ctx, obs := WithObservation(WithDecision(t.Context(), d))
		obs.setReason(d.Reason)
		var ran []string
		err := r.Read(ctx, func(ctx context.Context) error {
			got, _ := DecisionFrom(ctx)
			ran = append(ran, got.Node)
			if got.Node == "r1" || (got.Node == "r2" && r2behind) {
				return &BehindError{Replayed: need - 5, Need: need}
			}
			return nil
		})
		want, reason := "[r1 r2]", ReasonLSNCaughtUp
		if r2behind {
			want, reason = "[r1 r2 primary]", ReasonReplicasBehind
		}
		if err != nil || fmt.Sprint(ran) != want || obs.Reason() != reason {
			t.Errorf("r2 behind %v: Read = %v, ran on %v, reason %q; want %s, %q", r2behind, err, ran, obs.Reason(), want, reason)
		}
	}
	// A read whose writes were unknown (Redis down) that misses ends on
	// the primary as tracker-unavailable, as it would have without the try.
	unknown := d
	unknown.Reason, unknown.again = ReasonTrackerUnavailable, false
	ctx, obs := WithObservation(WithDecision(t.Context(), unknown))
	obs.setReason(unknown.Reason)
	err := r.Read(ctx, func(ctx context.Context) error {
		if got, _ := DecisionFrom(ctx); got.Node != Primary {
			return &BehindError{Replayed: need - 5, Need: need}
		}
		return nil
	})
	if err != nil || obs.Reason() != ReasonTrackerUnavailable {
		t.Errorf("a hopeful tracker-unavailable read that missed: %v, reason %q; want the primary, tracker-unavailable", err, obs.Reason())
	}
	reps.following = []string{"r1"}
	// Replica pools that do not check positions: never hopefully.
	r.cfg.CheckedReplicas = false
	if d := r.ForOwnRead(t.Context(), "u"); d.hopeful {
		t.Errorf("ForOwnRead with unchecked replica pools = %+v; want no hopeful read", d)
	}
	r.cfg.CheckedReplicas = true
	// No replica keeps up: the primary, at once.
	reps.following = nil
	if d := r.ForOwnRead(t.Context(), "u"); d.Node != Primary || d.Reason != ReasonReplicasBehind {
		t.Errorf("ForOwnRead with no replica keeping up = %+v; want the primary, replicas-behind", d)
	}
}

// TestUnknownWritesGoToThePrimary: in lsn mode as in time mode, a read
// whose user's writes are unknown (Redis down) goes to the primary, without
// asking it anything, though a replica keeps up. Control: with
// UnknownWritesOnReplicas, the same read asks the primary's position and
// goes to the replica.
func TestUnknownWritesGoToThePrimary(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, onReplicas := range []bool{false, true} {
		tr := newFakeTracker()
		tr.err = errors.New("redis: connection refused")
		reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"},
			following: []string{"r1"}, fenceAsOf: now}
		wal := &gatedWAL{gate: make(chan struct{})}
		close(wal.gate)
		wal.pos.Store(uint64(lsnAt(now)))
		r := NewRouter(RouterConfig{Mode: ModeLSN, MarkerTTL: testTTL, Tracker: tr, View: reps, WAL: wal, CheckedReplicas: true,
			UnknownWritesOnReplicas: onReplicas, FenceLease: time.Second, RecordBudget: time.Second, Now: func() time.Time { return now }})
		want, asked := Primary, int32(0)
		if onReplicas {
			want, asked = "r1", 1
		}
		d := r.ForOwnRead(t.Context(), "u")
		if d.Node != want || d.Reason != ReasonTrackerUnavailable || wal.calls.Load() != asked {
			t.Errorf("UnknownWritesOnReplicas %v: ForOwnRead = %+v after %d position queries; want %s, tracker-unavailable, after %d",
				onReplicas, d, wal.calls.Load(), want, asked)
		}
	}
}

// TestUnknownWritesWarnOnceInAWhile: through a Redis outage every own
// read has unknown writes; one in unknownWarnEvery logs a warning, and
// the others log at debug level, so the log is not flooded.
func TestUnknownWritesWarnOnceInAWhile(t *testing.T) {
	var mu sync.Mutex
	levels := map[slog.Level]int{}
	logger := slog.New(handlerFunc(func(r slog.Record) {
		mu.Lock()
		defer mu.Unlock()
		levels[r.Level]++
	}))
	tr := newFakeTracker()
	tr.err = errors.New("redis: connection refused")
	now := t0.Add(time.Hour)
	r := NewRouter(RouterConfig{Mode: ModeLSN, MarkerTTL: testTTL, Tracker: tr, View: &fakeReplicas{}, Logger: logger,
		Now: func() time.Time { return now }})
	for range 100 {
		if d := r.ForOwnRead(t.Context(), "u"); d.Node != Primary || d.Reason != ReasonTrackerUnavailable {
			t.Fatalf("ForOwnRead = %+v; want the primary, tracker-unavailable", d)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if levels[slog.LevelWarn] != 1 || levels[slog.LevelDebug] != 99 {
		t.Errorf("100 reads of unknown writes logged %v; want 1 warning and 99 at debug level", levels)
	}
}

// handlerFunc is a slog.Handler that hands every record, at any level,
// to f.
type handlerFunc func(slog.Record)

func (h handlerFunc) Enabled(context.Context, slog.Level) bool      { return true }
func (h handlerFunc) Handle(_ context.Context, r slog.Record) error { h(r); return nil }
func (h handlerFunc) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h handlerFunc) WithGroup(string) slog.Handler                 { return h }

// TestUnknownWritesAskNothingWhenNoReplicaCouldServe: with
// UnknownWritesOnReplicas, a read whose user's writes are unknown needs a replica at the primary's position, which the
// router asks. When no replica keeps up and none is known past where the
// primary was at its last poll, none could serve it: the primary serves it,
// unasked. Control: with the same replica keeping up, the position is
// asked, and the read goes to the replica hopefully.
func TestUnknownWritesAskNothingWhenNoReplicaCouldServe(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tt := range []struct {
		name      string
		following []string
		asked     int32
		want      string
	}{
		{"no replica keeps up", nil, 0, Primary},
		{"control: the replica keeps up", []string{"r1"}, 1, "r1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := newFakeTracker()
			tr.err = errors.New("redis: connection refused")
			reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now.Add(-time.Second))}, order: []string{"r1"},
				following: tt.following, fenceAsOf: now}
			wal := &gatedWAL{gate: make(chan struct{})}
			close(wal.gate)
			wal.pos.Store(uint64(lsnAt(now)))
			r := NewRouter(RouterConfig{Mode: ModeLSN, MarkerTTL: testTTL, Tracker: tr, View: reps, WAL: wal, CheckedReplicas: true,
				UnknownWritesOnReplicas: true, FenceLease: time.Second, RecordBudget: time.Second, Now: func() time.Time { return now }})
			d := r.ForOwnRead(t.Context(), "u")
			if d.Node != tt.want || d.Reason != ReasonTrackerUnavailable || wal.calls.Load() != tt.asked {
				t.Errorf("ForOwnRead = %+v after %d position queries; want %s, tracker-unavailable, after %d", d, wal.calls.Load(), tt.want, tt.asked)
			}
		})
	}
}
