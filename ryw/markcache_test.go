package ryw_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/ryw"
)

// waitLive waits until the tracker's cache has its subscription confirmed.
func waitLive(t *testing.T, tr *ryw.RedisTracker) {
	t.Helper()
	waitUntil(t, func() bool { return ryw.MarkCacheLive(tr) })
}

// readerAndWriter are two trackers on the stack's Redis, as two instances
// of a service: the reader's cache is subscribed.
func readerAndWriter(t *testing.T) (reader, writer *ryw.RedisTracker) {
	t.Helper()
	// No lease: the barrier alone (see the lease tests below).
	reader, _ = newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: -1})
	writer, _ = newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: -1})
	waitLive(t, reader)
	return reader, writer
}

// Two instances: a writes nothing and looks users up, b records their
// writes. Every lookup on a made after b's Record returned shows the
// write, though a answers most lookups from its cache: the cached entry is
// dropped by the published record, and a trusts an entry only after a barrier
// that left after the lookup began.
//
// With a cache lease (the second subtest), a lookup trusts the cache
// without a barrier of its own while a barrier published less than the
// lease ago has come back, and each Record waits the lease out: the same
// holds, with far fewer barriers than lookups.
func TestMarkCacheShowsEveryWriteAcknowledgedBeforeTheLookup(t *testing.T) {
	needStack(t)
	for _, lease := range []time.Duration{-1, 20 * time.Millisecond} {
		t.Run(fmt.Sprintf("lease=%s", lease), func(t *testing.T) {
			reader, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
			writer, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
			waitLive(t, reader)
			showsEveryWrite(t, reader, writer, lease)
		})
	}
}

func showsEveryWrite(t *testing.T, reader, writer *ryw.RedisTracker, lease time.Duration) {
	ctx := t.Context()
	prefix := fmt.Sprintf("cache-%d-", seq.Add(1))
	const users, rounds = 40, 15
	var wg sync.WaitGroup
	errs := make(chan error, users*rounds*2)
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprint(prefix, u)
			withTime := u%2 == 0
			var want ryw.LSN
			for r := range rounds {
				// Twice: the second is answered from the cache.
				for range 2 {
					m, err := reader.Lookup(ctx, user, withTime)
					if err != nil || m.Token.LSN != want || (withTime && want != 0 && m.WrittenAt.IsZero()) {
						errs <- fmt.Errorf("%s before write %d: Lookup = %+v, %v; want token %s", user, r, m, err, want)
					}
				}
				want = ryw.LSN(0x1_0000_0000 + r*1000 + u)
				if _, err := writer.Record(ctx, user, tl1(want)); err != nil {
					errs <- err
					return
				}
				m, err := reader.Lookup(ctx, user, withTime)
				if err != nil || m.Token.LSN != want || (withTime && m.WrittenAt.IsZero()) {
					errs <- fmt.Errorf("%s right after write %d: Lookup = %+v, %v; want token %s", user, r, m, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hits, barriers := reader.CachedLookups()
	// Of 3 lookups per round, the second is cached (the first too, from
	// the second round on); the one right after a write is not.
	if min := int64(users * rounds); hits < min {
		t.Errorf("the cache answered %d lookups of %d; want at least %d", hits, users*rounds*3, min)
	}
	if lease > 0 && barriers >= hits {
		t.Errorf("with a lease, %d barriers for %d cached lookups; want fewer barriers than lookups", barriers, hits)
	}
	t.Logf("%d lookups, %d answered from the cache, %d barriers", users*rounds*3, hits, barriers)
}

// The control: with the published records held back, a cache that trusts
// its entries without the barrier shows a user no write after one was
// acknowledged; with the barrier it does not, since the barrier's message
// comes behind the held message: the barrier times out, which the tracker
// cannot tell from a Redis that hangs, so its breaker sheds the lookup
// (the router then reads at the primary's position) until Redis answers.
// Either way, never the stale entry.
func TestMarkCacheWithoutTheBarrierWouldServeStaleMarks(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	reader, writer := readerAndWriter(t)
	user := fmt.Sprintf("cache-control-%d", seq.Add(1))
	for range 2 {
		if m, err := reader.Lookup(ctx, user, false); err != nil || m.HasWrite() {
			t.Fatalf("Lookup of a user who never wrote = %+v, %v", m, err)
		}
	}
	if hits, _ := reader.CachedLookups(); hits != 1 {
		t.Fatalf("the second lookup was not answered from the cache (hits %d)", hits)
	}
	hold := make(chan struct{})
	defer func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	}()
	ryw.HoldMarkMessages(reader, hold, true)
	want := tl1(0x2_0000_0001)
	if _, err := writer.Record(ctx, user, want); err != nil {
		t.Fatal(err)
	}
	if m, err := reader.Lookup(ctx, user, false); err != nil || m.Token == want {
		t.Fatalf("control: without the barrier, Lookup = %+v, %v; want the stale cached entry (no write)", m, err)
	}
	ryw.HoldMarkMessages(reader, hold, false)
	if m, err := reader.Lookup(ctx, user, false); !errors.Is(err, ryw.ErrTrackerShedding) && (err != nil || m.Token != want) {
		t.Fatalf("with the barrier, Lookup = %+v, %v; want token %s, or the lookup shed", m, err, want)
	}
	close(hold)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := reader.Lookup(ctx, user, false)
		if err == nil {
			if m.Token != want {
				t.Fatalf("once the messages flow, Lookup = %+v; want token %s", m, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup still fails 10s after the messages flow again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Redis restarted empty: the cache is emptied with its subscription, so a
// user it held as having no write is looked up again, and held to the new
// epoch's floor, which covers a write acknowledged while Redis was down.
func TestMarkCacheForgetsEverythingWhenRedisRestarts(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	tracker, _ := newTracker(t, 10*time.Minute)
	waitLive(t, tracker)
	user := fmt.Sprintf("cache-restart-%d", seq.Add(1))
	for range 2 {
		if _, err := tracker.Lookup(ctx, user, false); err != nil {
			t.Fatal(err)
		}
	}
	hits, _ := tracker.CachedLookups()
	if hits == 0 {
		t.Fatal("the second lookup was not answered from the cache")
	}
	stack.Redis.StopForTest(t)
	// A write acknowledged while Redis is down (its record failed).
	db := openPool(t, stack.Primary.URL)
	var text string
	if err := db.QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		t.Fatal(err)
	}
	written, err := ryw.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var m ryw.Marks
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		lookup, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err = tracker.Lookup(lookup, user, false)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup after Redis restarted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after, _ := tracker.CachedLookups(); after != hits {
		t.Errorf("a lookup after Redis restarted was answered from the cache (%d hits, %d before)", after, hits)
	}
	if m.Floor < written {
		t.Errorf("after Redis restarted empty, Lookup = %+v; want a floor at or past %s, written while Redis was down", m, written)
	}
}

// startLoneRedis starts a redis-server of its own, for a test that needs
// a second server, and returns its address.
func startLoneRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Skipf("no redis-server to start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(t.Context()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer within 10s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// A subscription on another server than the client's connections (as
// after a Sentinel failover, when the client's pool has moved to the new
// master and the subscription is still on the old one) hears none of the
// records: the barrier, which goes where the records go, never comes back
// on it, so the cache trusts nothing it holds and every lookup shows the
// write. The control trusts entries without the barrier, and shows none.
func TestMarkCacheTrustsNothingWhenItsSubscriptionIsElsewhere(t *testing.T) {
	needStack(t)
	elsewhere := startLoneRedis(t)
	opts, err := redis.ParseURL(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	var dialer net.Dialer
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ryw.IsSubscription(ctx) {
			addr = elsewhere
		}
		return dialer.DialContext(ctx, network, addr)
	}
	// With the lease, too: a barrier that reaches no subscriber neither
	// registers a lease nor starts one.
	for _, lease := range []time.Duration{-1, 0} {
		t.Run(fmt.Sprintf("lease=%s", lease), func(t *testing.T) {
			client := redis.NewClient(opts)
			t.Cleanup(func() { client.Close() })
			reader := ryw.NewRedisTracker(client, ryw.TrackerConfig{TTL: 10 * time.Minute, Timeout: 200 * time.Millisecond, CacheLease: lease,
				WAL: ryw.PrimaryWAL{DB: openPool(t, stack.Primary.URL)}, Logger: quiet()})
			t.Cleanup(reader.Close)
			writer, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
			waitLive(t, reader)
			servesNoStaleMarks(t, reader, writer)
		})
	}
}

func servesNoStaleMarks(t *testing.T, reader, writer *ryw.RedisTracker) {
	ctx := t.Context()
	for round := range 20 {
		user := fmt.Sprintf("cache-elsewhere-%d-%d", seq.Add(1), round)
		// Looked up while the subscription is confirmed, so kept.
		waitLive(t, reader)
		if _, err := reader.Lookup(ctx, user, false); err != nil {
			t.Fatal(err)
		}
		want := tl1(ryw.LSN(0x3_0000_0000 + round))
		if _, err := writer.Record(ctx, user, want); err != nil {
			t.Fatal(err)
		}
		control := round%2 == 1
		ryw.HoldMarkMessages(reader, nil, control)
		m, err := reader.Lookup(ctx, user, false)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !control && m.Token != want:
			t.Fatalf("round %d: Lookup = %+v; want token %s, recorded before it", round, m, want)
		case control && m.Token == want:
			// The entry may have been dropped anyway: the subscription
			// starts over whenever a barrier fails. Not a failure.
		case control:
			t.Logf("control, round %d: without the barrier the cache showed %+v after %s was recorded", round, m.Token, want)
			return
		}
	}
	t.Error("control: in 10 tries, a cache without the barrier never served stale marks from a subscription on another server")
}

// The cache lease: the reader trusts what it holds for up to a second after a
// barrier, without one of its own. A writer with the lease asks every
// cache that registered a lease to acknowledge its record, and is answered
// once each has, or once its lease has ended. Here the reader's messages
// are held, so it cannot acknowledge: the writer waits for the end of its
// lease (and the reader's renewal, behind the held message, never comes
// back), and the reader then shows the write or sheds the lookup, never
// the stale entry. The control is a writer without the lease, which waits
// for nothing: the reader, inside its lease, serves the stale entry.
func TestMarkCacheLeaseHoldsOnlyBecauseWritersWaitForIt(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	const lease = time.Second
	for _, writerWaits := range []bool{false, true} {
		t.Run(fmt.Sprintf("writerWaits=%v", writerWaits), func(t *testing.T) {
			reader, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
			writerLease := time.Duration(-1)
			if writerWaits {
				writerLease = lease
			}
			writer, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: writerLease})
			waitLive(t, reader)
			user := fmt.Sprintf("cache-lease-%d", seq.Add(1))
			// The first lookup asks Redis and keeps the answer; the second
			// waits for a barrier, which starts the lease.
			for range 2 {
				if m, err := reader.Lookup(ctx, user, false); err != nil || m.HasWrite() {
					t.Fatalf("Lookup of a user who never wrote = %+v, %v", m, err)
				}
			}
			hold := make(chan struct{})
			t.Cleanup(func() { close(hold) })
			ryw.HoldMarkMessages(reader, hold, false)
			want := tl1(0x4_0000_0001)
			if _, err := writer.Record(ctx, user, want); err != nil {
				t.Fatal(err)
			}
			m, err := reader.Lookup(ctx, user, false)
			switch {
			case !writerWaits && (err != nil || m.Token == want):
				t.Fatalf("control: a writer that does not wait; Lookup = %+v, %v; want the stale entry (no write), served inside the lease", m, err)
			case writerWaits && errors.Is(err, ryw.ErrTrackerShedding):
				t.Logf("the reader's renewal did not come back: lookup shed (the router then reads at the primary's position)")
			case writerWaits && (err != nil || m.Token != want):
				t.Fatalf("after the writer waited for the reader's lease, Lookup = %+v, %v; want token %s", m, err, want)
			}
			if acked, lapsed := writer.LeaseWaits(); writerWaits && (lapsed != 1 || acked != 0) {
				t.Errorf("the writer's waits: %d acknowledged, %d lapsed; want the one lapsed (the reader could not acknowledge)", acked, lapsed)
			}
		})
	}
}

// The steady state of the cache lease: a reader that applies the
// writer's messages acknowledges them, and the writer is answered on the
// acknowledgement, not at the end of the lease; the reader, still inside
// its lease, shows the write at once. A stopped cache leaves the list,
// so the writer's next record waits for nobody.
func TestMarkCacheLeaseWritersAreAnsweredOnAcknowledgement(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	const lease = time.Second
	reader, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
	writer, _ := newTrackerWith(t, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheLease: lease})
	waitLive(t, reader)
	waitLive(t, writer)
	// A first record may find the list of caches new (started by the
	// first barrier), and wait out a lease: that one is not counted.
	if _, err := writer.Record(ctx, fmt.Sprintf("cache-ack-warm-%d", seq.Add(1)), tl1(1)); err != nil {
		t.Fatal(err)
	}
	acked0, lapsed0 := writer.LeaseWaits()
	for i := range 20 {
		user := fmt.Sprintf("cache-ack-%d", seq.Add(1))
		for range 2 {
			if _, err := reader.Lookup(ctx, user, false); err != nil {
				t.Fatal(err)
			}
		}
		want := tl1(ryw.LSN(0x5_0000_0000 + i))
		if _, err := writer.Record(ctx, user, want); err != nil {
			t.Fatal(err)
		}
		if m, err := reader.Lookup(ctx, user, false); err != nil || m.Token != want {
			t.Fatalf("right after the record, Lookup = %+v, %v; want token %s", m, err, want)
		}
	}
	acked, lapsed := writer.LeaseWaits()
	if acked-acked0 != 20 || lapsed != lapsed0 {
		t.Errorf("of 20 records, %d were answered on acknowledgement and %d at the end of a lease; want all 20 acknowledged", acked-acked0, lapsed-lapsed0)
	}
	hits, barriers := reader.CachedLookups()
	t.Logf("reader: %d cached lookups, %d barriers", hits, barriers)
	reader.Close()
	if _, err := writer.Record(ctx, fmt.Sprintf("cache-ack-after-%d", seq.Add(1)), tl1(2)); err != nil {
		t.Fatal(err)
	}
	if a, l := writer.LeaseWaits(); a != acked+1 || l != lapsed {
		t.Errorf("after the reader stopped, the record waited for it (%d acknowledged, %d lapsed; before %d, %d)", a, l, acked, lapsed)
	}
}
