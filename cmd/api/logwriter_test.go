package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer that counts the writes it gets.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogWriterKeepsEveryLineInOrder: lines from many goroutines all arrive,
// whole, each goroutine's in its order, and Close leaves nothing behind.
func TestLogWriterKeepsEveryLineInOrder(t *testing.T) {
	var out syncBuffer
	lw := newLogWriter(&out)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(lw, "g%d line %d %s\n", g, i, strings.Repeat("x", i%300))
			}
		})
	}
	wg.Wait()
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d line %d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("torn line %q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[g]-1)
		}
		if want := fmt.Sprintf("g%d line %d %s", g, i, strings.Repeat("x", i%300)); l != want {
			t.Fatalf("torn line %q", l)
		}
		next[g]++
	}
	if out.writes >= writers*lines {
		t.Logf("no coalescing this time: %d writes for %d lines", out.writes, writers*lines)
	}
	// After Close, writes go straight through.
	fmt.Fprintf(lw, "late\n")
	if !strings.HasSuffix(out.String(), "late\n") {
		t.Error("a write after Close was not written")
	}
}

// TestLogWriterWritesALoneLineWithoutClose: an idle service's line goes out
// on its own, with no flush or timer needed.
func TestLogWriterWritesALoneLineWithoutClose(t *testing.T) {
	var out syncBuffer
	lw := newLogWriter(&out)
	defer lw.Close()
	fmt.Fprintf(lw, "alone\n")
	waitFor(t, func() bool { return out.String() == "alone\n" })
}
