package ryw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// MarksChannel is the Redis channel on which every write's record names
// the user whose marks changed ("*": every user's). Trackers that cache
// marks subscribe to it.
const MarksChannel = "ryw:marks"

// DefaultCacheUsers bounds how many users' marks one tracker keeps.
const DefaultCacheUsers = 200_000

// errNotLive: the cache's subscription is not (yet, or no longer) known to
// carry every change, so nothing cached may be trusted.
var errNotLive = errors.New("mark cache: subscription not live")

// markCache keeps the marks this process has looked up, so that a user's
// next read asks Redis nothing about that user. It is kept true by Redis
// itself: every Record publishes the user's id on MarksChannel in the same
// script that raises the marks, and the cache drops the user when the
// message arrives.
//
// A cached entry is trusted only after a barrier: a message this process
// publishes, through the client's ordinary connections, after the read
// began, on a channel of its own that its subscription also listens to,
// and that has come back on the subscription. The barrier goes where the
// records go (the server the client's connections reach, which after a
// Sentinel failover is not the one an old subscription listens to), and
// Redis writes a published message into each subscriber's connection when
// the PUBLISH runs, in order. So once the barrier's message is back, every
// write acknowledged before the read began (its record, on that server,
// ran before the barrier's PUBLISH) has already dropped its user's entry.
// One barrier serves every read that waited for it: under load that is one
// short round trip for many reads, where a lookup was one key (or two) per
// read, parsed on both sides. A subscription on another server never sees
// the barrier: Redis answers the PUBLISH with no subscriber, or nothing
// arrives within the timeout, and the subscription starts over.
//
// Whatever breaks the subscription (a restart, a failover, a dropped or
// hung connection, a reconnect) empties the cache and stops trusting it
// until Redis confirms the new subscription; entries looked up before the
// confirmation are never kept. An entry is kept only if no change for its
// shard arrived while its lookup was out, so a lookup that raced a write
// cannot put the older marks back.
type markCache struct {
	client  *redis.Client
	timeout time.Duration
	logger  *slog.Logger
	// unanswered is told when Redis did not answer a barrier in time, so
	// that the tracker's breaker sheds the lookups that follow at once
	// rather than let each wait out a timeout of its own.
	unanswered func(error)
	max        int
	seed       maphash.Seed
	shards     [cacheShards]cacheShard
	// barrierChannel is this process's own channel: its barriers come
	// back on it, and no other process's go there. With a lease, other
	// caches acknowledge this process's records there too.
	barrierChannel string
	id             string // the random part of barrierChannel
	acks           *acks  // acknowledgements of this process's records
	acker          *acker // sends this cache's acknowledgements
	seq            atomic.Uint64

	hits, barriers atomic.Int64

	// lease, when positive, lets a lookup trust what the cache holds
	// without a barrier of its own for up to lease after a barrier was
	// published that has come back: every writer waits until this cache
	// has acknowledged its record, or its lease has ended, before the
	// write is acknowledged (see TrackerConfig.CacheLease). trust holds
	// the current generation's lease; renewing is set while a renewal is
	// out.
	lease    time.Duration
	base     time.Time // monotonic origin of trust's times
	trust    atomic.Pointer[cacheTrust]
	renewing atomic.Bool

	// For tests: messages wait for testHold to close before they apply,
	// and testNoBarrier trusts entries without a barrier (the control).
	testHold      atomic.Pointer[chan struct{}]
	testNoBarrier atomic.Bool

	mu          sync.Mutex
	server      string // the run id of the subscription's server, if known
	gen         uint64 // bumped on every loss of the subscription
	live        bool   // the subscription of gen is confirmed
	ps          *redis.PubSub
	waiting     *barrierRound // joined by reads; sent by publishBarriers
	inflight    *barrierRound // sent, not answered
	nextBarrier uint64
	closed      bool

	kick chan struct{}
	stop chan struct{}
	done sync.WaitGroup
}

const cacheShards = 32

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]cachedMarks
	// changes counts the messages that touched this shard: a lookup keeps
	// its answer only if none arrived while it was out.
	changes uint64
}

// cachedMarks is one user's marks as a lookup read them.
type cachedMarks struct {
	gen      uint64
	token    Position
	at       time.Time // the time mark; zero when none or not read
	withTime bool      // the lookup read the time mark
	redisNow time.Time // Redis's clock at the lookup ...
	readAt   time.Time // ... and this process's (monotonic), for Age
}

// cacheTrust is how long entries of generation gen are trusted without a
// barrier: until the time until (since markCache.base).
type cacheTrust struct {
	gen   uint64
	until time.Duration
}

// barrierRound is one barrier and the reads that wait for it. It ends
// once: answered, failed, or timed out (its own timer, one for all its
// reads, started when the first of them came).
type barrierRound struct {
	id    uint64
	sent  time.Duration // since markCache.base, taken before the PUBLISH
	done  chan struct{}
	err   error
	once  sync.Once
	timer *time.Timer
}

// errBarrierTimeout: the barrier did not come back within the timeout.
var errBarrierTimeout = fmt.Errorf("mark cache: no barrier within the timeout: %w", context.DeadlineExceeded)

// finish ends the round, the first time it is called. (The timer is not
// stopped here: its own callback calls finish. Whoever takes the round
// under c.mu stops it.)
func (r *barrierRound) finish(err error) {
	r.once.Do(func() {
		r.err = err
		close(r.done)
	})
}

func newMarkCache(client *redis.Client, timeout, lease time.Duration, max int, logger *slog.Logger) *markCache {
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &markCache{client: client, timeout: timeout, lease: lease, base: time.Now(), logger: logger, max: max, seed: maphash.MakeSeed(),
		id: hex.EncodeToString(id[:]), acks: newAcks(),
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	c.barrierChannel = MarksChannel + ":barrier:" + c.id
	c.acker = &acker{client: client, id: c.id, timeout: timeout, pending: map[string][]string{}, kick: make(chan struct{}, 1)}
	for i := range c.shards {
		c.shards[i].m = map[string]cachedMarks{}
	}
	return c
}

// start subscribes and starts answering barriers, once the cache is where
// the tracker's connection checks (noteServer) find it.
func (c *markCache) start() {
	c.done.Add(3)
	go c.receive()
	go c.publishBarriers()
	go func() {
		defer c.done.Done()
		c.acker.run(c.stop, c.logger)
	}()
}

func (c *markCache) shard(user string) *cacheShard {
	return &c.shards[maphash.String(c.seed, user)%cacheShards]
}

// get returns the user's cached marks once a barrier has shown that no
// change is on its way, or false: nothing cached, or nothing trusted.
func (c *markCache) get(ctx context.Context, user string, withTime bool) (cachedMarks, bool) {
	s := c.shard(user)
	s.mu.RLock()
	e, ok := s.m[user]
	s.mu.RUnlock()
	if !ok || (withTime && !e.withTime) {
		return cachedMarks{}, false
	}
	if c.lease > 0 {
		if tr := c.trust.Load(); tr != nil && tr.gen == e.gen {
			now := time.Since(c.base)
			if now < tr.until {
				// A barrier published less than the lease ago came back,
				// and registered the lease: a write acknowledged since
				// waited for this cache to apply it, or for the lease to
				// end (see docs/CONSISTENCY.md, "The cache lease").
				if now > tr.until-c.lease/2 && c.renewing.CompareAndSwap(false, true) {
					c.renew()
				}
				c.hits.Add(1)
				return e, true
			}
		}
	}
	if !c.testNoBarrier.Load() {
		// Bounded by the tracker's timeout, whatever the caller's: the
		// round's own timer (a timer per read cost half of get).
		if err := c.barrier(ctx); err != nil {
			return cachedMarks{}, false
		}
	}
	s.mu.RLock()
	e, ok = s.m[user]
	s.mu.RUnlock()
	c.mu.Lock()
	trusted := c.live && e.gen == c.gen
	c.mu.Unlock()
	if !ok || !trusted || (withTime && !e.withTime) {
		return cachedMarks{}, false
	}
	c.hits.Add(1)
	return e, true
}

// ticket is taken before a lookup is sent: what put needs to tell
// whether anything changed meanwhile.
type ticket struct {
	gen, changes uint64
	ok           bool
}

func (c *markCache) take(user string) ticket {
	c.mu.Lock()
	gen, live := c.gen, c.live
	c.mu.Unlock()
	if !live {
		return ticket{}
	}
	s := c.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return ticket{gen: gen, changes: s.changes, ok: true}
}

// put keeps a lookup's answer, unless the subscription broke or a change
// for the user's shard arrived since the ticket was taken.
func (c *markCache) put(user string, tk ticket, e cachedMarks) {
	if !tk.ok {
		return
	}
	s := c.shard(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changes != tk.changes {
		return
	}
	c.mu.Lock()
	current := c.live && c.gen == tk.gen
	c.mu.Unlock()
	if !current {
		return
	}
	if len(s.m) >= c.max/cacheShards+1 {
		// Full: drop an eighth, whichever the map gives first. A dropped
		// user is looked up again; nothing is lost.
		n := max(1, len(s.m)/8)
		for k := range s.m {
			if n == 0 {
				break
			}
			delete(s.m, k)
			n--
		}
	}
	e.gen = tk.gen
	s.m[user] = e
}

// drop forgets a user whose marks changed.
func (c *markCache) drop(user string) {
	s := c.shard(user)
	s.mu.Lock()
	s.changes++
	delete(s.m, user)
	s.mu.Unlock()
}

// clear forgets every user.
func (c *markCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.changes++
		s.m = map[string]cachedMarks{}
		s.mu.Unlock()
	}
}

// lose ends the trust in the subscription of generation gen, if it is
// still the current one: the cache is emptied, and every barrier waiting
// fails (its reads look up instead).
func (c *markCache) lose(gen uint64, err error) {
	c.mu.Lock()
	if gen != c.gen {
		c.mu.Unlock()
		return // already lost
	}
	c.newGeneration(false, err)
}

// newGeneration starts a new generation of the subscription, live or not,
// and releases c.mu, which the caller holds: the cache is emptied, and the
// barriers of the old one fail with err (their reads look up instead).
func (c *markCache) newGeneration(live bool, err error) {
	c.gen++
	c.live = live
	c.trust.Store(nil)
	c.renewing.Store(false)
	rounds := []*barrierRound{c.waiting, c.inflight}
	c.waiting, c.inflight = nil, nil
	c.mu.Unlock()
	c.clear()
	for _, r := range rounds {
		if r != nil {
			r.timer.Stop()
			r.finish(err)
		}
	}
}

// barrier returns once a message published after it was called has come
// back on the subscription, with every message before it applied.
func (c *markCache) barrier(ctx context.Context) error {
	r := c.join()
	if r == nil {
		return errNotLive
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// join returns the barrier round that goes out next, and makes sure it
// goes; nil if the subscription is not live.
func (c *markCache) join() *barrierRound {
	c.mu.Lock()
	if !c.live {
		c.mu.Unlock()
		return nil
	}
	r := c.waiting
	if r == nil {
		r = &barrierRound{done: make(chan struct{})}
		r.timer = time.AfterFunc(c.timeout, func() { r.finish(errBarrierTimeout) })
		c.waiting = r
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return r
}

// renew sends a barrier that nobody waits for, to extend the lease
// before it runs out; renewing is cleared when the lease is extended or
// the generation ends.
func (c *markCache) renew() {
	if c.join() == nil {
		c.renewing.Store(false)
	}
}

// publishBarriers publishes one barrier at a time for the reads that wait: those
// that come while one is out share the next.
func (c *markCache) publishBarriers() {
	defer c.done.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		for {
			// Let the goroutines that are ready to run go first: under
			// load, some are about to wait too, and join this barrier.
			runtime.Gosched()
			c.mu.Lock()
			r, ps := c.waiting, c.ps
			if r == nil || ps == nil || !c.live || c.inflight != nil {
				c.mu.Unlock()
				break
			}
			c.waiting, c.inflight = nil, r
			c.nextBarrier++
			r.id = c.nextBarrier
			r.sent = time.Since(c.base)
			c.mu.Unlock()
			c.barriers.Add(1)
			timer.Reset(c.timeout)
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			var heard int64
			var err error
			if c.lease > 0 {
				// The barrier also registers the lease it starts, so that
				// writers wait for this cache (see TrackerConfig.CacheLease).
				heard, err = registerBarrier.Run(ctx, c.client, []string{CachesKey, EpochKey},
					c.barrierChannel, strconv.FormatUint(r.id, 10), c.id, (c.lease + c.lease/8).Milliseconds()).Int64()
			} else {
				heard, err = c.client.Publish(ctx, c.barrierChannel, strconv.FormatUint(r.id, 10)).Result()
			}
			cancel()
			if err == nil && heard == 0 {
				// Redis knows no subscriber: the subscription is on
				// another server than the client's connections.
				err = errors.New("mark cache: the barrier reached no subscriber (the subscription is on another server)")
			}
			if err != nil {
				timer.Stop()
				if unanswered(err) {
					c.unanswered(err)
				}
				c.fail(ps, err)
				continue
			}
			select {
			case <-r.done:
				timer.Stop()
				if r.err == errBarrierTimeout {
					// Its own timer ran out first: the same verdict.
					c.unanswered(r.err)
					c.fail(ps, r.err)
				}
			case <-timer.C:
				// Redis hangs, or the connection does, or the
				// subscription is elsewhere: trust nothing until a new
				// subscription is confirmed.
				r.finish(errBarrierTimeout)
				c.unanswered(errBarrierTimeout)
				c.fail(ps, errBarrierTimeout)
			case <-c.stop:
				return
			}
		}
	}
}

// fail gives up on ps, if it is still the current subscription: the
// cache is emptied, and closing ps makes the receiver start another.
func (c *markCache) fail(ps *redis.PubSub, err error) {
	c.mu.Lock()
	current := c.ps == ps
	gen := c.gen
	if current {
		c.ps = nil // the receiver never confirms it again
	}
	c.mu.Unlock()
	if current {
		c.lose(gen, err)
	}
	_ = ps.Close()
}

// subConn marks the context of the subscription's calls, so that the
// tracker's check of each new connection can tell the subscription's.
type subConn struct{}

// noteServer is told the run id of every new connection's server. The
// subscription's is kept; any other connection that finds another server
// means the records may now go where the subscription does not listen
// (a Sentinel failover moves the client's pool at once, and a
// subscription only when the old master is reconfigured): the
// subscription starts over at once, rather than when its next barrier
// fails to come back.
func (c *markCache) noteServer(ctx context.Context, runID string) {
	if runID == "" {
		return // INFO refused: the barrier still finds a subscription elsewhere
	}
	c.mu.Lock()
	if ctx.Value(subConn{}) != nil {
		c.server = runID
		c.mu.Unlock()
		return
	}
	moved := c.server != "" && c.server != runID
	ps := c.ps
	if moved {
		c.server = "" // the next subscription reports its own
	}
	c.mu.Unlock()
	if moved && ps != nil {
		c.fail(ps, errors.New("mark cache: the subscription is on another server than new connections"))
	}
}

// receive subscribes, applies messages in order, answers barriers, and
// starts over on any error, until the cache is closed.
func (c *markCache) receive() {
	defer c.done.Done()
	ctx := context.WithValue(context.Background(), subConn{}, true)
	backoff := 10 * time.Millisecond
	said := false // the current failure was logged
	for {
		ps := c.client.Subscribe(ctx)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = ps.Close()
			return
		}
		c.ps = ps
		c.mu.Unlock()
		err := ps.Subscribe(ctx, MarksChannel, c.barrierChannel)
		for err == nil {
			var msg any
			if msg, err = ps.Receive(ctx); err != nil {
				break
			}
			if c.apply(ps, msg) {
				if said {
					c.logger.Info("redis: the mark cache is subscribed again")
					said = false
				}
			}
			backoff = 10 * time.Millisecond
		}
		c.fail(ps, err)
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if !said && !closed {
			c.logger.Warn("redis: the mark cache lost its subscription; own-write reads ask Redis until it is back", "err", err)
			said = true
		}
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// apply handles one message of ps, and reports whether it confirmed the
// subscription.
func (c *markCache) apply(ps *redis.PubSub, msg any) bool {
	switch m := msg.(type) {
	case *redis.Subscription:
		// Confirmed (again, if go-redis reconnected on its own): a new
		// generation, since whatever came before may have missed
		// messages. The barrier channel is confirmed in the same reply.
		if m.Kind != "subscribe" || m.Channel != MarksChannel {
			break
		}
		c.mu.Lock()
		if c.ps != ps {
			c.mu.Unlock() // failed meanwhile: about to be closed
			break
		}
		c.newGeneration(true, errNotLive)
		return true
	case *redis.Message:
		if m.Channel == c.barrierChannel {
			if ack, ok := strings.CutPrefix(m.Payload, ackReply); ok {
				if id, seqs, ok := parseAck(ack); ok {
					c.acks.note(id, seqs)
				}
				break
			}
			c.answered(m.Payload)
			break
		}
		if hold := c.testHold.Load(); hold != nil {
			<-*hold
		}
		if req, ok := strings.CutPrefix(m.Payload, ackPrefix); ok {
			// Every message before it, its record's among them, is
			// applied: acknowledge it, if this cache trusts a lease.
			if writer, seq, ok := strings.Cut(req, " "); ok && c.lease > 0 && writer != c.id {
				c.acker.ask(writer, seq)
			}
			break
		}
		if m.Payload == "*" {
			c.clear()
		} else {
			c.drop(m.Payload)
		}
	}
	return false
}

// answered closes the barrier round whose message came back.
func (c *markCache) answered(payload string) {
	c.mu.Lock()
	r := c.inflight
	if r != nil && strconv.FormatUint(r.id, 10) == payload {
		c.inflight = nil
		if c.lease > 0 && c.live {
			if tr := c.trust.Load(); tr == nil || tr.gen != c.gen || tr.until < r.sent+c.lease {
				c.trust.Store(&cacheTrust{gen: c.gen, until: r.sent + c.lease})
			}
			c.renewing.Store(false)
		}
	} else {
		r = nil
	}
	c.mu.Unlock()
	if r != nil {
		r.timer.Stop()
		r.finish(nil)
	}
	// Reads that queued meanwhile go out in the next barrier.
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// close stops the cache's goroutines.
func (c *markCache) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	ps := c.ps
	c.mu.Unlock()
	close(c.stop)
	if ps != nil {
		c.fail(ps, errNotLive)
	}
	c.done.Wait()
	if c.lease > 0 {
		// Writers need not wait for a cache that is gone.
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		_ = deregister.Run(ctx, c.client, []string{CachesKey}, c.id).Err()
		cancel()
	}
}
