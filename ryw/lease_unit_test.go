package ryw

import (
	"context"
	"errors"
	"testing"
	"time"
)

// What a record waits for, read from the lease check's answer: every
// other cache whose lease has not ended, until its end on this process's
// clock (plus the margin), and a whole lease after the list was started
// anew while it is younger than that.
func TestParseLeaseCheckWaitsForEveryOtherLiveCache(t *testing.T) {
	const lease, margin = 200 * time.Millisecond, 25 * time.Millisecond
	answered := time.Unix(1000, 0)
	// Redis's clock at 50,000 ms; the list is 10 s old.
	w, err := parseLeaseCheck([]any{"50000", "40000", "a", "50100", "own", "50200", "b", "50225"}, answered, lease, margin, "own")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{
		"a": answered.Add(100*time.Millisecond + margin),
		"b": answered.Add(225*time.Millisecond + margin),
	}
	if len(w.caches) != len(want) || w.caches["a"] != want["a"] || w.caches["b"] != want["b"] {
		t.Errorf("caches = %v; want %v (the writer's own cache left out)", w.caches, want)
	}
	if !w.restart.IsZero() {
		t.Errorf("a list 10 s old: restart = %v; want none", w.restart)
	}
	// Started 100 ms ago: a cache it lost may trust a lease for up to a
	// lease and an eighth after that.
	w, err = parseLeaseCheck([]any{"50000", "49900"}, answered, lease, margin, "own")
	if err != nil {
		t.Fatal(err)
	}
	if want := answered.Add(125*time.Millisecond + margin); !w.restart.Equal(want) {
		t.Errorf("a list started 100 ms ago: restart = %v; want %v", w.restart, want)
	}
	// No start at all: as if started now.
	w, err = parseLeaseCheck([]any{"50000", ""}, answered, lease, margin, "own")
	if err != nil {
		t.Fatal(err)
	}
	if want := answered.Add(225*time.Millisecond + margin); !w.restart.Equal(want) {
		t.Errorf("no start: restart = %v; want %v", w.restart, want)
	}
	for _, bad := range [][]any{{"50000"}, {"x", "1"}, {"50000", "1", "a", "soon"}} {
		if _, err := parseLeaseCheck(bad, answered, lease, margin, "own"); err == nil {
			t.Errorf("parseLeaseCheck(%v): no error", bad)
		}
	}
}

// A record's wait ends when every cache acknowledged that record, or
// reached its deadline. An acknowledgement of another record (one sent
// later may reach Redis first) does not count; with no number (the
// writer asked for none), only deadlines do.
func TestAcksWaitEndsOnItsOwnAcknowledgementsOrDeadlines(t *testing.T) {
	a := newAcks()
	far := time.Now().Add(time.Hour)
	a.expect(7)
	a.expect(8)
	done := make(chan bool, 1)
	go func() {
		lapsed, err := a.wait(t.Context(), leaseWait{seq: 7, caches: map[string]time.Time{"a": far, "b": far}})
		if err != nil {
			t.Error(err)
		}
		done <- lapsed
	}()
	a.note("a", []uint64{7})
	a.note("b", []uint64{8})
	select {
	case <-done:
		t.Fatal("the wait for record 7 ended on b's acknowledgement of record 8")
	case <-time.After(20 * time.Millisecond):
	}
	a.note("b", []uint64{6, 7})
	if lapsed := <-done; lapsed {
		t.Error("ended by acknowledgements, but reported lapsed")
	}

	// A deadline in the past ends the wait for that cache, reported.
	past := time.Now().Add(-time.Millisecond)
	lapsed, err := a.wait(t.Context(), leaseWait{seq: 8, caches: map[string]time.Time{"a": past, "b": far}})
	if err != nil || !lapsed {
		t.Errorf("wait = %v, %v; want lapsed (a's lease ended; b acknowledged 8)", lapsed, err)
	}
	// No number: an acknowledgement cannot end it.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	a.expect(0)
	a.note("a", []uint64{0})
	if _, err := a.wait(ctx, leaseWait{caches: map[string]time.Time{"a": far}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a wait with no number: %v; want it to wait for the deadline (here the context's)", err)
	}
	// The list was started anew: the wait lasts until restart.
	restart := time.Now().Add(5 * time.Millisecond)
	if lapsed, err := a.wait(t.Context(), leaseWait{restart: restart}); err != nil || !lapsed || time.Now().Before(restart) {
		t.Errorf("wait with a restart = %v, %v at %v; want lapsed at %v or later", lapsed, err, time.Now(), restart)
	}
}

func TestParseAck(t *testing.T) {
	id, seqs, ok := parseAck("c1 3,4,10")
	if !ok || id != "c1" || len(seqs) != 3 || seqs[2] != 10 {
		t.Errorf(`parseAck("c1 3,4,10") = %q, %v, %v`, id, seqs, ok)
	}
	for _, bad := range []string{"", "c1", " 3", "c1 x", "c1 3,"} {
		if _, _, ok := parseAck(bad); ok {
			t.Errorf("parseAck(%q) ok", bad)
		}
	}
}
