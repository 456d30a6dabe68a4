package ryw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

// fakeTracker is an in-memory Tracker that can be made to fail.
type fakeTracker struct {
	at  map[string]time.Time
	lsn map[string]LSN
	err error
}

func newFakeTracker() *fakeTracker {
	return &fakeTracker{at: map[string]time.Time{}, lsn: map[string]LSN{}}
}

func (f *fakeTracker) RecordWrite(_ context.Context, user string, at time.Time) error {
	if f.err != nil {
		return f.err
	}
	f.at[user] = at
	return nil
}

func (f *fakeTracker) LastWrite(_ context.Context, user string) (time.Time, bool, error) {
	if f.err != nil {
		return time.Time{}, false, f.err
	}
	at, ok := f.at[user]
	return at, ok, nil
}

func (f *fakeTracker) RecordLSN(_ context.Context, user string, lsn LSN) error {
	if f.err != nil {
		return f.err
	}
	f.lsn[user] = max(f.lsn[user], lsn)
	return nil
}

func (f *fakeTracker) LastLSN(_ context.Context, user string) (LSN, bool, error) {
	if f.err != nil {
		return 0, false, f.err
	}
	l, ok := f.lsn[user]
	return l, ok, nil
}

// fakeReplicas models a primary whose WAL position grows by one per
// millisecond from t0, and replicas that have replayed some position.
type fakeReplicas struct {
	replay    map[string]LSN // absent: unhealthy
	order     []string
	down      []string
	refreshed int
	now       *time.Time
}

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

func (f *fakeReplicas) RequiredLSN(t time.Time) (LSN, bool) {
	if f.now != nil && t.After(*f.now) {
		return 0, false
	}
	return lsnAt(t), true
}

func (f *fakeReplicas) Refresh(context.Context, []string) { f.refreshed++ }

func (f *fakeReplicas) MarkDown(name string, _ error) {
	f.down = append(f.down, name)
	delete(f.replay, name)
}

func (f *fakeReplicas) Behind(name string, lsn LSN) { f.replay[name] = lsn }

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func newTestRouter(mode Mode, tr *fakeTracker, reps *fakeReplicas, now *time.Time) *Router {
	reps.now = now
	if reps.replay == nil {
		reps.replay = map[string]LSN{}
	}
	return NewRouter(RouterConfig{Mode: mode, Window: 5 * time.Second, Tracker: tr, Replicas: reps, Now: func() time.Time { return *now }})
}

func TestOwnReadRouting(t *testing.T) {
	down := errors.New("redis: connection refused")
	tests := []struct {
		name      string
		mode      Mode
		lastWrite time.Duration // before now; 0: no marker
		trackErr  error
		freshTo   map[string]time.Duration // replica -> fresh up to now minus this
		wantNode  string
		wantWhy   Reason
	}{
		{"inside the window", ModeTime, 2 * time.Second, nil, map[string]time.Duration{"r1": 0}, Primary, ReasonRecentWrite},
		{"just inside the window", ModeTime, 5*time.Second - time.Nanosecond, nil, map[string]time.Duration{"r1": 0}, Primary, ReasonRecentWrite},
		{"outside the window", ModeTime, 6 * time.Second, nil, map[string]time.Duration{"r1": 0}, "r1", ReasonNoRecentWrite},
		{"no marker", ModeTime, 0, nil, map[string]time.Duration{"r1": time.Second}, "r1", ReasonNoRecentWrite},
		{"replica behind the write", ModeTime, 6 * time.Second, nil, map[string]time.Duration{"r1": 7 * time.Second}, Primary, ReasonNoReplica},
		{"only the fresh replica", ModeTime, 6 * time.Second, nil, map[string]time.Duration{"r1": 7 * time.Second, "r2": time.Second}, "r2", ReasonNoRecentWrite},
		{"old write, lagging replica still past it", ModeTime, time.Minute, nil, map[string]time.Duration{"r1": 30 * time.Second}, "r1", ReasonNoRecentWrite},
		{"no marker, replica lagging more than the window", ModeTime, 0, nil, map[string]time.Duration{"r1": 6 * time.Second}, Primary, ReasonNoReplica},
		{"no healthy replica", ModeTime, 6 * time.Second, nil, nil, Primary, ReasonNoReplica},
		{"tracker down", ModeTime, 0, down, map[string]time.Duration{"r1": 0}, Primary, ReasonTrackerUnavailable},
		{"off ignores the write", ModeOff, time.Second, nil, map[string]time.Duration{"r1": time.Minute}, "r1", ReasonRYWOff},
		{"off ignores the tracker", ModeOff, 0, down, map[string]time.Duration{"r1": 0}, "r1", ReasonRYWOff},
		{"off without replicas", ModeOff, 0, nil, nil, Primary, ReasonNoReplica},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0
			tr := newFakeTracker()
			tr.err = tt.trackErr
			if tt.lastWrite > 0 {
				tr.at["u"] = now.Add(-tt.lastWrite)
			}
			reps := &fakeReplicas{replay: map[string]LSN{}}
			for _, n := range []string{"r1", "r2"} {
				if d, ok := tt.freshTo[n]; ok {
					reps.replay[n] = lsnAt(now.Add(-d))
					reps.order = append(reps.order, n)
				}
			}
			got := newTestRouter(tt.mode, tr, reps, &now).ForOwnRead(t.Context(), "u")
			if got.Node != tt.wantNode || got.Reason != tt.wantWhy {
				t.Errorf("ForOwnRead = %+v, want {%s %s}", got, tt.wantNode, tt.wantWhy)
			}
		})
	}
}

func TestStaleReadAndWrite(t *testing.T) {
	now := t0
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now.Add(-time.Hour))}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, newFakeTracker(), reps, &now)
	if d := r.ForStaleRead(); d != (Decision{"r1", ReasonStaleOK, 0}) {
		t.Errorf("ForStaleRead = %+v: any healthy replica, however stale", d)
	}
	if d := r.ForWrite(); d != (Decision{Node: Primary, Reason: ReasonWrite}) {
		t.Errorf("ForWrite = %+v", d)
	}
	delete(reps.replay, "r1")
	if d := r.ForStaleRead(); d != (Decision{Node: Primary, Reason: ReasonNoReplica}) {
		t.Errorf("ForStaleRead without replicas = %+v", d)
	}
}

func TestRecordWriteFallsBackToThisInstance(t *testing.T) {
	now := t0
	tr := newFakeTracker()
	tr.err = errors.New("redis down")
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, tr, reps, &now)
	if err := r.RecordWrite(t.Context(), "u"); err == nil {
		t.Fatal("RecordWrite hid the tracker's failure")
	}
	// Redis is back, without the marker: the local mark keeps the user on
	// the primary for the window, and only for the window.
	tr.err = nil
	now = t0.Add(4 * time.Second)
	if d := r.ForOwnRead(t.Context(), "u"); d != (Decision{Node: Primary, Reason: ReasonRecentWrite}) {
		t.Errorf("inside the window after a failed record: %+v", d)
	}
	if d := r.ForOwnRead(t.Context(), "someone-else"); d.Node != "r1" {
		t.Errorf("another user went to %+v", d)
	}
	now = t0.Add(5 * time.Second)
	reps.replay["r1"] = lsnAt(now)
	if d := r.ForOwnRead(t.Context(), "u"); d.Node != "r1" || d.Reason != ReasonNoRecentWrite || d.MinLSN != lsnAt(t0) {
		t.Errorf("after the window: %+v", d)
	}
}

func TestRecordWriteStoresTheCommitTime(t *testing.T) {
	now := t0
	tr := newFakeTracker()
	r := newTestRouter(ModeTime, tr, &fakeReplicas{}, &now)
	if err := r.RecordWrite(t.Context(), "u"); err != nil {
		t.Fatal(err)
	}
	if !tr.at["u"].Equal(t0) {
		t.Errorf("recorded %v, want %v", tr.at["u"], t0)
	}
}

func TestReadRetriesOnThePrimary(t *testing.T) {
	now := t0
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, newFakeTracker(), reps, &now)
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
