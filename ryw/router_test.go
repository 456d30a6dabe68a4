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
	err error
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

// fakeReplicas says each replica is fresh up to a given time.
type fakeReplicas struct {
	freshTo map[string]time.Time // absent: unhealthy
	order   []string
	down    []string
}

func (f *fakeReplicas) Fresh(t time.Time) []string {
	var out []string
	for _, n := range f.order {
		ft, ok := f.freshTo[n]
		if ok && (t.IsZero() || ft.After(t)) {
			out = append(out, n)
		}
	}
	return out
}

func (f *fakeReplicas) MarkDown(name string, _ error) {
	f.down = append(f.down, name)
	delete(f.freshTo, name)
}

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func newTestRouter(mode Mode, tr *fakeTracker, reps *fakeReplicas, now *time.Time) *Router {
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
			tr := &fakeTracker{at: map[string]time.Time{}, err: tt.trackErr}
			if tt.lastWrite > 0 {
				tr.at["u"] = now.Add(-tt.lastWrite)
			}
			reps := &fakeReplicas{freshTo: map[string]time.Time{}}
			for _, n := range []string{"r1", "r2"} {
				if d, ok := tt.freshTo[n]; ok {
					reps.freshTo[n] = now.Add(-d)
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
	reps := &fakeReplicas{freshTo: map[string]time.Time{"r1": now.Add(-time.Hour)}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, &fakeTracker{at: map[string]time.Time{}}, reps, &now)
	if d := r.ForStaleRead(); d != (Decision{"r1", ReasonStaleOK}) {
		t.Errorf("ForStaleRead = %+v: any healthy replica, however stale", d)
	}
	if d := r.ForWrite(); d != (Decision{Primary, ReasonWrite}) {
		t.Errorf("ForWrite = %+v", d)
	}
	delete(reps.freshTo, "r1")
	if d := r.ForStaleRead(); d != (Decision{Primary, ReasonNoReplica}) {
		t.Errorf("ForStaleRead without replicas = %+v", d)
	}
}

func TestRecordWriteFallsBackToThisInstance(t *testing.T) {
	now := t0
	tr := &fakeTracker{at: map[string]time.Time{}, err: errors.New("redis down")}
	reps := &fakeReplicas{freshTo: map[string]time.Time{"r1": now}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, tr, reps, &now)
	if err := r.RecordWrite(t.Context(), "u"); err == nil {
		t.Fatal("RecordWrite hid the tracker's failure")
	}
	// Redis is back, without the marker: the local mark keeps the user on
	// the primary for the window, and only for the window.
	tr.err = nil
	now = t0.Add(4 * time.Second)
	if d := r.ForOwnRead(t.Context(), "u"); d != (Decision{Primary, ReasonRecentWrite}) {
		t.Errorf("inside the window after a failed record: %+v", d)
	}
	if d := r.ForOwnRead(t.Context(), "someone-else"); d.Node != "r1" {
		t.Errorf("another user went to %+v", d)
	}
	now = t0.Add(5 * time.Second)
	reps.freshTo["r1"] = now
	if d := r.ForOwnRead(t.Context(), "u"); d != (Decision{"r1", ReasonNoRecentWrite}) {
		t.Errorf("after the window: %+v", d)
	}
}

func TestRecordWriteStoresTheCommitTime(t *testing.T) {
	now := t0
	tr := &fakeTracker{at: map[string]time.Time{}}
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
	reps := &fakeReplicas{freshTo: map[string]time.Time{"r1": now}, order: []string{"r1"}}
	r := newTestRouter(ModeTime, &fakeTracker{at: map[string]time.Time{}}, reps, &now)
	unreachable := fmt.Errorf("query: %w", errors.Join(errors.New("x"), errUnexpectedEOF()))

	ctx, obs := WithObservation(WithDecision(t.Context(), Decision{"r1", ReasonStaleOK}))
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
	err = r.Read(WithDecision(t.Context(), Decision{"r2", ReasonStaleOK}), func(ctx context.Context) error {
		d, _ := DecisionFrom(ctx)
		ran = append(ran, d.Node)
		return bad
	})
	if !errors.Is(err, bad) || len(ran) != 1 {
		t.Errorf("Read = %v after %v; want the error, once", err, ran)
	}
}

func errUnexpectedEOF() error { return fmt.Errorf("read: %w", io.ErrUnexpectedEOF) }
