package ryw

import (
	"context"
	"errors"
	"testing"
	"time"
)

const sys = "7302061513459013653"

func at2(tli int, l LSN) Position { return Position{System: sys, Timeline: tli, LSN: l} }

func TestClusterJudge(t *testing.T) {
	// Timeline 3's history: 1 ended at 0/5000, 2 at 0/9000.
	c := Cluster{System: sys, Timeline: 3, Ends: map[int]LSN{1: 0x5000, 2: 0x9000}}
	for _, tt := range []struct {
		name string
		c    Cluster
		p    Position
		want Position
		v    Verdict
	}{
		{"current timeline", c, at2(3, 0xA000), at2(3, 0xA000), Current},
		{"ancestor, below its end", c, at2(1, 0x4000), at2(3, 0x4000), Current},
		{"ancestor, at its end", c, at2(2, 0x9000), at2(3, 0x9000), Current},
		{"ancestor, past its end: lost", c, at2(2, 0x9001), at2(3, 0x9000), Lost},
		{"the first timeline, past its end: lost", c, at2(1, 0x6000), at2(3, 0x5000), Lost},
		{"a newer timeline than known", c, at2(4, 0x100), at2(4, 0x100), Unjudged},
		{"history not read", Cluster{System: sys, Timeline: 3}, at2(2, 0x100), at2(2, 0x100), Unjudged},
		{"another cluster", c, Position{System: "1", Timeline: 3, LSN: 0x100}, Position{}, Foreign},
		{"no timeline (an earlier token)", c, Position{LSN: 0xB000}, at2(3, 0xB000), Current},
		{"primary not seen yet", Cluster{}, at2(7, 0x100), at2(7, 0x100), Current},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, v := tt.c.Judge(tt.p)
			if got != tt.want || v != tt.v {
				t.Errorf("Judge(%+v) = %+v, %s; want %+v, %s", tt.p, got, v, tt.want, tt.v)
			}
		})
	}
}

func TestParseHistory(t *testing.T) {
	ends, err := parseHistory("1\t0/3000148\tno recovery target specified\n\n# comment\n2\t1/A0000000\tbefore 2026-11-26\n")
	if err != nil || len(ends) != 2 || ends[1] != 0x3000148 || ends[2] != 0x1_A0000000 {
		t.Errorf("parseHistory = %v, %v", ends, err)
	}
	for _, bad := range []string{"x\t0/1", "1", "1\tnot-an-lsn", "0\t0/1"} {
		if _, err := parseHistory(bad); err == nil {
			t.Errorf("parseHistory(%q) took it", bad)
		}
	}
}

func TestMarkValues(t *testing.T) {
	p := at2(2, 0x1_0000ABCD)
	v := markValue(p)
	if v != sys+":00000002000000010000ABCD" {
		t.Errorf("markValue = %q", v)
	}
	if got, err := parseMarkValue(v); got != p || err != nil {
		t.Errorf("parseMarkValue(%q) = %+v, %v", v, got, err)
	}
	// With a low bound.
	p.Low = 0x1_00000000
	if got, err := parseMarkValue(markValue(p)); got != p || err != nil || markValue(p) != v+"~0000000100000000" {
		t.Errorf("a mark with a low bound: %q -> %+v, %v", markValue(p), got, err)
	}
	// A mark from before marks carried a timeline.
	if got, err := parseMarkValue("000000010000ABCD"); got != (Position{LSN: 0x1_0000ABCD}) || err != nil {
		t.Errorf("legacy mark = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "xyz", sys + ":0000000200000001", sys + ":zz000002000000010000ABCD", "0000000G0000ABCD"} {
		if _, err := parseMarkValue(bad); err == nil {
			t.Errorf("parseMarkValue(%q) took it", bad)
		}
	}
}

func TestLater(t *testing.T) {
	for _, tt := range []struct{ a, b, want Position }{
		{at2(1, 5), at2(1, 7), at2(1, 7)},
		{at2(2, 5), at2(1, 7), at2(2, 5)}, // a later timeline is later
		{Position{}, at2(1, 7), at2(1, 7)},
		{Position{LSN: 9}, at2(1, 7), at2(1, 9)}, // no timeline: taken as the other's
	} {
		if got := Later(tt.a, tt.b); got != tt.want {
			t.Errorf("Later(%+v, %+v) = %+v, want %+v", tt.a, tt.b, got, tt.want)
		}
		if got := Later(tt.b, tt.a); got != tt.want {
			t.Errorf("Later(%+v, %+v) = %+v, want %+v", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestSessionFloorRouting: with the floor on, a stale-ok read goes only to
// a replica at or past what the client has seen, and an own-write read
// needs it too; off, or with RYW_MODE=off, any replica serves (the
// control).
func TestSessionFloorRouting(t *testing.T) {
	now := t0.Add(time.Hour)
	seen := lsnAt(now.Add(-time.Second))
	newReps := func() *fakeReplicas {
		return &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now.Add(-time.Minute)), "r2": lsnAt(now)}, order: []string{"r1", "r2"}, fenceAsOf: now}
	}
	ctx := WithClientSession(t.Context(), Session{Seen: pos(seen)})
	for range 20 {
		r := newTestRouter(ModeLSN, newFakeTracker(), newReps(), nil, &now)
		r.cfg.Monotonic = true
		if d := r.ForStaleRead(ctx); d.Node != "r2" || d.MinLSN != seen || !d.MeasureSeen {
			t.Fatalf("stale read with a floor = %+v; want r2, at the floor, measured", d)
		}
		if d := r.ForOwnRead(ctx, "u"); d.Node != "r2" || d.MinLSN < seen || !d.MeasureSeen {
			t.Fatalf("own read with a floor = %+v; want r2, at the floor", d)
		}
	}
	// Nothing past the floor: the primary (after asking the replicas).
	reps := newReps()
	reps.replay["r2"] = lsnAt(now.Add(-time.Minute))
	r := newTestRouter(ModeTime, newFakeTracker(), reps, nil, &now)
	r.cfg.Monotonic = true
	if d := r.ForStaleRead(ctx); d.Node != Primary || d.Reason != ReasonSessionFloor || reps.refreshed.Load() == 0 {
		t.Errorf("stale read, no replica past the floor = %+v (refreshed %d); want the primary, session-floor, after a refresh", d, reps.refreshed.Load())
	}
	// The control: the floor off, r1 serves too.
	servedBy := map[string]bool{}
	for range 50 {
		r := newTestRouter(ModeLSN, newFakeTracker(), newReps(), nil, &now)
		servedBy[r.ForStaleRead(ctx).Node] = true
	}
	if !servedBy["r1"] {
		t.Errorf("floor off: served by %v; want r1 among them", servedBy)
	}
}

// TestLostWritesAreFoundOnce: after a failover, a mark past the switch
// point is a lost write: the read goes to the primary, the mark is
// repaired to the switch point, and it is counted once; a mark below the
// switch point is routed on as usual. A write that replaces a lost mark
// finds it too, reading the history from the primary when the monitor
// has not.
func TestLostWritesAreFoundOnce(t *testing.T) {
	now := t0.Add(time.Hour)
	cluster := Cluster{System: sys, Timeline: 2, Ends: map[int]LSN{1: lsnAt(now.Add(-time.Minute))}}
	reps := &fakeReplicas{replay: map[string]LSN{"r1": lsnAt(now)}, order: []string{"r1"}, fenceAsOf: now, cluster: cluster}
	tr := newFakeTracker()
	lost := at2(1, lsnAt(now.Add(-time.Second)))
	kept := at2(1, lsnAt(now.Add(-2*time.Minute)))
	tr.marks["a"] = Marks{Token: lost}
	tr.marks["b"] = Marks{Token: kept}
	r := newTestRouter(ModeLSN, tr, reps, nil, &now)
	for range 3 {
		if d := r.ForOwnRead(t.Context(), "a"); d.Node != "r1" && d.Reason != ReasonWriteLost {
			t.Errorf("a's read = %+v", d)
		}
	}
	if n := r.Counts().LostWrites[LostKey(LostInTracker, false)]; n != 1 {
		t.Errorf("lost writes counted %d times; want once (possibly lost: the mark has no low bound)", n)
	}
	// A mark whose low bound is past the switch point too: lost for
	// certain.
	tr.marks["d"] = Marks{Token: Position{System: sys, Timeline: 1, LSN: lost.LSN, Low: lost.LSN - 10}}
	r.ForOwnRead(t.Context(), "d")
	if n := r.Counts().LostWrites[LostKey(LostInTracker, true)]; n != 1 {
		t.Errorf("certainly lost writes counted %d; want 1", n)
	}
	if m := tr.marks["a"].Token; m != at2(2, cluster.Ends[1]) {
		t.Errorf("a's mark = %+v; want the switch point on timeline 2", m)
	}
	if d := r.ForOwnRead(t.Context(), "b"); d.Node != "r1" || d.MinLSN != kept.LSN {
		t.Errorf("b's read (a write below the switch point) = %+v; want r1 at b's write", d)
	}
	// A client token of the lost write: read from the primary, counted
	// as found in a token, and the next token holds the switch point.
	ctx, obs := WithObservation(WithClientSession(t.Context(), Session{Write: lost}))
	if d := r.ForOwnRead(ctx, "b"); d.Node != Primary || d.Reason != ReasonWriteLost {
		t.Errorf("read with a lost token = %+v; want the primary, write-lost", d)
	}
	if s := r.SessionAfter(ctx, obs); s.Write != at2(2, cluster.Ends[1]) {
		t.Errorf("the next token's write = %+v; want the switch point", s.Write)
	}
	if n := r.Counts().LostWrites[LostKey(LostInToken, false)]; n != 1 {
		t.Errorf("lost tokens counted %d; want 1", n)
	}
	// A write on timeline 2 replacing c's lost mark, before the monitor
	// has read timeline 2's history: the write reads it and counts it.
	tr.marks["c"] = Marks{Token: lost}
	wal := &fakeWAL{at: lsnAt(now), system: sys, timeline: 2, ends: cluster.Ends}
	reps.cluster = Cluster{System: sys, Timeline: 1, Ends: map[int]LSN{}}
	r2 := newTestRouter(ModeLSN, tr, reps, wal, &now)
	if err := r2.RecordWrite(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if n := r2.Counts().LostWrites[LostKey(LostInTracker, false)]; n != 1 {
		t.Errorf("a write replacing a lost mark: counted %d; want 1", n)
	}
	if err := r2.RecordWrite(context.Background(), "c"); err != nil || r2.Counts().LostWrites[LostKey(LostInTracker, false)] != 1 {
		t.Errorf("the next write: %v, counted %d; want still 1", err, r2.Counts().LostWrites[LostKey(LostInTracker, false)])
	}
}

// TestAWriteWhosePrimaryChangedIsUnconfirmed: a write committed on one
// server whose token was read on another (a failover in between), or whose
// first read of the position failed, is recorded (the new position covers
// it if it survived) but answered unconfirmed: it may have been lost. The
// control: the same server, read at once, is confirmed.
func TestAWriteWhosePrimaryChangedIsUnconfirmed(t *testing.T) {
	now := t0
	for _, tt := range []struct {
		name        string
		wrote, read string
		failures    int
		confirmed   bool
	}{
		{"same server", "10.0.0.1:5432", "10.0.0.1:5432", 0, true},
		{"another server", "10.0.0.1:5432", "10.0.0.2:5432", 0, false},
		{"the first read failed", "10.0.0.1:5432", "10.0.0.1:5432", 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := newFakeTracker()
			wal := &fakeWAL{at: 0x5_00000010, system: sys, timeline: 2, server: tt.read, positionFailures: tt.failures}
			r := newTestRouter(ModeLSN, tr, &fakeReplicas{}, wal, &now)
			ctx, obs := WithObservation(t.Context())
			obs.ranOnPrimary(tt.wrote)
			err := r.RecordWrite(ctx, "u")
			if tt.confirmed != (err == nil) || (err != nil && !errors.Is(err, ErrUnconfirmed)) {
				t.Errorf("RecordWrite = %v; want confirmed %v", err, tt.confirmed)
			}
			if tr.marks["u"].Token.LSN != wal.at {
				t.Errorf("mark = %+v; want the position recorded either way", tr.marks["u"].Token)
			}
		})
	}
}
