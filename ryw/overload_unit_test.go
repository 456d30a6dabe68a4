package ryw

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestReplicaFailedJudgesTheReplicaNotOurWait: a read that timed out
// before a connection of the replica's pool took it leaves the replica in
// rotation; the same timeout once the read reached the replica (as every
// timeout was judged before issue 20) takes it out, and so does a refused
// connection, which is the replica's doing however early it comes.
func TestReplicaFailedJudgesTheReplicaNotOurWait(t *testing.T) {
	reached := &attempt{}
	reached.reached.Store(true)
	reached.left.Store(int64(DefaultReplicaTimeout))
	late := &attempt{}
	late.reached.Store(true)
	late.left.Store(int64(DefaultReplicaTimeout / 10))
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tt := range []struct {
		name     string
		err      error
		timedOut bool
		at       *attempt
		down     bool
		reason   Reason
	}{
		{"waited for the pool", context.DeadlineExceeded, true, &attempt{}, false, ReasonReplicaBusy},
		{"connect timed out", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, false, &attempt{}, false, ReasonReplicaBusy},
		{"overran on the replica", context.DeadlineExceeded, true, reached, true, ReasonReplicaFailed},
		{"reached the replica with a tenth of its time left", context.DeadlineExceeded, true, late, false, ReasonReplicaBusy},
		{"refused with its time left", refused, false, late, true, ReasonReplicaFailed},
		{"attempt unknown (control: the old judgement)", context.DeadlineExceeded, true, nil, true, ReasonReplicaFailed},
		{"connection refused", refused, false, &attempt{}, true, ReasonReplicaFailed},
		{"the pool found only closed connections", driver.ErrBadConn, false, &attempt{}, false, ReasonReplicaBusy},
		{"a connection broke under the read", io.ErrUnexpectedEOF, false, reached, true, ReasonReplicaFailed},
		{"the replica's statement_timeout fired first", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, false, reached, true, ReasonReplicaFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			view := &fakeReplicas{replay: map[string]LSN{"r1": 1}, order: []string{"r1"}}
			r := NewRouter(RouterConfig{Mode: ModeOff, View: view})
			reason, retry, _ := r.replicaFailed(t.Context(), Decision{Node: "r1", Reason: ReasonRYWOff}, tt.err, tt.timedOut, tt.at)
			if down := len(view.down) > 0; down != tt.down {
				t.Errorf("taken out of rotation: %v, want %v", down, tt.down)
			}
			if !retry || reason != tt.reason {
				t.Errorf("retry %v for %q; want a retry for %q", retry, reason, tt.reason)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestRetryBudget: retries of reads that waited for a busy pool are
// bounded by a tenth of the replica reads plus retryFloor a second, and
// past it the read fails with ErrOverloaded.
func TestRetryBudget(t *testing.T) {
	var b retryBudget
	now := time.Unix(1e9, 0)
	n := 0
	for b.take(now) {
		n++
	}
	if n != retryFloor {
		t.Fatalf("first burst: %d retries, want %d", n, retryFloor)
	}
	for range 100 {
		b.deposit()
	}
	if n = 0; true {
		for b.take(now) {
			n++
		}
	}
	if n != 10 {
		t.Errorf("after 100 replica reads: %d retries, want 10", n)
	}
	now = now.Add(500 * time.Millisecond)
	if n = 0; true {
		for b.take(now) {
			n++
		}
	}
	if n != retryFloor/2 {
		t.Errorf("after half a second: %d retries, want %d", n, retryFloor/2)
	}

	view := &fakeReplicas{replay: map[string]LSN{"r1": 1}, order: []string{"r1"}}
	r := NewRouter(RouterConfig{Mode: ModeOff, View: view, Now: func() time.Time { return now }})
	d := Decision{Node: "r1", Reason: ReasonRYWOff}
	for i := range retryFloor + 1 {
		_, retry, err := r.replicaFailed(t.Context(), d, context.DeadlineExceeded, true, &attempt{})
		if i < retryFloor && !retry {
			t.Fatalf("retry %d refused within the budget: %v", i, err)
		}
		if i == retryFloor && (retry || !errors.Is(err, ErrOverloaded)) {
			t.Errorf("past the budget: retry %v, err %v; want ErrOverloaded", retry, err)
		}
	}
	if got := r.Counts().Overloaded; got != 1 {
		t.Errorf("overloaded reads counted: %d, want 1", got)
	}
}

// A replica's own statement_timeout (the replica timeout) can fire a
// moment before the client's deadline: it is the same verdict. Other
// cancellations are not.
func TestIsStatementTimeout(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, true},
		{fmt.Errorf("read: %w", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}), true},
		{&pgconn.PgError{Code: "57014", Message: "canceling statement due to user request"}, false},
		{&pgconn.PgError{Code: "40001", Message: "canceling statement due to conflict with recovery"}, false},
		{context.DeadlineExceeded, false},
	} {
		if got := isStatementTimeout(c.err); got != c.want {
			t.Errorf("isStatementTimeout(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
