package ryw_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/ryw"
)

// A fenced write is answered once every instance has acknowledged its
// fence, not after the lease: the lease here is a minute, and the
// replicas are paused behind the write, so only the acknowledgements can
// end the wait. The instances poll when the test says so.
//
//   - Every instance acknowledges: the write is answered, and the other
//     instance reads the write. Control: an instance whose acknowledgement
//     row is lost (deleted) is not waited for, and, still routing by the
//     fence before the write, reads the stale value from a paused replica.
//   - An instance stops acknowledging (it hangs, or crashed): the write is
//     answered once its row is older than an acknowledgement lives, and
//     from then on it sends own-write reads to the primary.
func TestFencedWritesWaitForEveryInstancesAcknowledgement(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	primary := openPool(t, stack.Primary.URL)
	db, err := ryw.Open(primary, replicaPools(t), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	wal := ryw.PrimaryWAL{DB: primary}
	// The writer's instance is cut off from Redis: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadRedis := l.Addr().String()
	l.Close()
	cutOff := redis.NewClient(&redis.Options{Addr: deadRedis, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { cutOff.Close() })
	noRedis := ryw.NewRedisTracker(cutOff, ryw.TrackerConfig{TTL: 10 * time.Minute, WAL: wal, Logger: quiet()})
	t.Cleanup(noRedis.Close)
	tracker, _ := newTracker(t, 10*time.Minute)
	instance := func(mode ryw.Mode, tr ryw.Tracker) (*ryw.Router, *ryw.Monitor) {
		m := ryw.NewMonitor(openPool(t, stack.Primary.URL), replicaPools(t), time.Hour, quiet())
		return ryw.NewRouter(ryw.RouterConfig{
			Mode: mode, Window: time.Millisecond, MarkerTTL: 10 * time.Minute, Tracker: tr, View: m, WAL: wal,
			FenceLease: time.Minute, RecordBudget: 2 * time.Minute, Logger: quiet(),
		}), m
	}
	table := newTable(t)
	read := ownReader(t, db, table)
	// v2OnThePrimary settles a user at v1 on every node, read from a
	// replica through reader, then pauses the replicas and writes v2.
	v2OnThePrimary := func(t *testing.T, reader *ryw.Router, monitors ...*ryw.Monitor) string {
		user := fmt.Sprintf("user-%d", seq.Add(1))
		if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, 'v1')", user); err != nil {
			t.Fatal(err)
		}
		if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool {
			for _, m := range monitors {
				m.Poll(ctx)
			}
			v, d := read(reader, user)
			return v == "v1" && !d.OnPrimary()
		})
		stack.PauseReplayForTest(t, stack.Replicas...)
		if err := stack.Primary.Exec(ctx, "UPDATE "+table+" SET v = 'v2' WHERE k = $1", user); err != nil {
			t.Fatal(err)
		}
		return user
	}
	// write records user's write through w in the background, polling
	// the monitors until it is answered.
	write := func(t *testing.T, w *ryw.Router, user string, polled ...*ryw.Monitor) {
		wctx, obs := ryw.WithObservation(ctx)
		done := make(chan error, 1)
		go func() { done <- w.RecordWrite(wctx, user) }()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case err := <-done:
				if err != nil || obs.Reason() != ryw.ReasonWriteFenced {
					t.Fatalf("RecordWrite = %v, reason %q; want the write secured by the fence", err, obs.Reason())
				}
				return
			case <-deadline:
				t.Fatal("the fenced write was not answered within 30s")
			case <-time.After(10 * time.Millisecond):
				for _, m := range polled {
					m.Poll(ctx)
				}
			}
		}
	}

	for _, mode := range []ryw.Mode{ryw.ModeTime, ryw.ModeLSN} {
		t.Run(string(mode)+"/every instance acknowledges", func(t *testing.T) {
			writer, mw := instance(mode, noRedis)
			reader, mr := instance(mode, tracker)
			user := v2OnThePrimary(t, reader, mw, mr)
			write(t, writer, user, mw, mr)
			if v, d := read(reader, user); v != "v2" {
				t.Errorf("read through the other instance = %q from %+v; want v2", v, d)
			}
		})
		t.Run(string(mode)+"/control: an acknowledgement lost", func(t *testing.T) {
			writer, mw := instance(mode, noRedis)
			reader, mr := instance(mode, tracker)
			user := v2OnThePrimary(t, reader, mw, mr)
			if err := stack.Primary.Exec(ctx, "DELETE FROM ryw_fence_ack WHERE instance <> $1", mw.Instance()); err != nil {
				t.Fatal(err)
			}
			write(t, writer, user, mw)
			if v, d := read(reader, user); v != "v1" || d.OnPrimary() {
				t.Errorf("control: read through the instance that was not waited for = %q from %+v; want the stale v1 from a paused replica", v, d)
			}
		})
		t.Run(string(mode)+"/an instance stops acknowledging", func(t *testing.T) {
			writer, mw := instance(mode, noRedis)
			reader, mr := instance(mode, tracker)
			user := v2OnThePrimary(t, reader, mw, mr)
			// Only the writer's monitor polls from here on.
			write(t, writer, user, mw)
			if v, d := read(reader, user); v != "v2" || d.Reason != ryw.ReasonFenceUnknown {
				t.Errorf("read through the instance that stopped acknowledging = %q from %+v; want v2 from the primary, fence-unknown", v, d)
			}
		})
	}
}
