package devstack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// RunTests is a test package's TestMain around one shared stack: it starts
// the stack, points *s at it, runs the tests and stops it, and returns the
// exit code:
//
//	func TestMain(m *testing.M) { os.Exit(devstack.RunTests(m, devstack.Options{Replicas: 2}, &stack)) }
func RunTests(m *testing.M, opts Options, s **Stack) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	st, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start devstack:", err)
		return 1
	}
	*s = st
	code := m.Run()
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close devstack:", err)
		code = 1
	}
	return code
}

// StopForTest stops the node cleanly and, when the test ends, starts it
// again if the test has not.
func (n *Node) StopForTest(t testing.TB) { n.haltForTest(t, n.Stop) }

// KillForTest crashes the node (like pg_ctl stop -m immediate) and, when the
// test ends, starts it again if the test has not.
func (n *Node) KillForTest(t testing.TB) { n.haltForTest(t, n.Kill) }

func (n *Node) haltForTest(t testing.TB, halt func(context.Context) error) {
	t.Helper()
	if err := halt(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !n.Running() {
			if err := n.Start(context.Background()); err != nil {
				t.Errorf("restart %s: %v", n.Name, err)
			}
		}
	})
}

// PauseReplayForTest pauses replay on the replica and, when the test ends,
// resumes it and waits until the replica has caught up with the primary.
func (s *Stack) PauseReplayForTest(t testing.TB, replicas ...*Node) {
	t.Helper()
	for _, r := range replicas {
		if err := r.PauseReplay(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, r := range replicas {
			if r.Running() {
				_ = r.ResumeReplay(ctx)
			}
		}
		if err := s.WaitCaughtUp(ctx, replicas...); err != nil {
			t.Errorf("after resuming replay: %v", err)
		}
	})
}

// StopForTest stops Redis and, when the test ends, starts it again if the
// test has not.
func (r *Redis) StopForTest(t testing.TB) {
	t.Helper()
	if err := r.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !r.Running() {
			if err := r.Start(context.Background()); err != nil {
				t.Errorf("restart redis: %v", err)
			}
		}
	})
}

// Buffer is a bytes.Buffer that several goroutines may write to, for
// collecting a process's or a server's logs in a test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
