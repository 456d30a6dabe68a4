package ryw

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"runtime"
	"strconv"
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
// A cached entry is trusted only after a barrier: a PING sent on the
// subscription's connection after the read began, and answered. Redis
// writes a published message into each subscriber's connection when the
// PUBLISH runs, and the PING's answer after it, on the same connection, in
// order. So once the answer is back, every write acknowledged before the
// read began (its record ran before the PING) has already dropped its
// user's entry. One PING serves every read that waited for it: under load
// that is one short round trip for many reads, where a lookup was one key
// (or two) per read, parsed on both sides.
//
// Whatever breaks the subscription (a restart, a failover, a dropped or
// hung connection, a reconnect) empties the cache and stops trusting it
// until Redis confirms the new subscription; entries looked up before the
// confirmation are never kept. An entry is kept only if no change for its
// shard arrived while its lookup was out, so a lookup that raced a write
// cannot put the older marks back.
type markCache struct {
	client  redis.UniversalClient
	timeout time.Duration
	logger  *slog.Logger
	max     int
	seed    maphash.Seed
	shards  [cacheShards]cacheShard

	hits, pings atomic.Int64

	// For tests: messages wait for testHold to close before they apply,
	// and testNoBarrier trusts entries without a PING (the control).
	testHold      atomic.Pointer[chan struct{}]
	testNoBarrier atomic.Bool

	mu       sync.Mutex
	server   string // the run id of the subscription's server
	gen      uint64 // bumped on every loss of the subscription
	live     bool   // the subscription of gen is confirmed
	ps       *redis.PubSub
	waiting  *pingRound // joined by reads; sent by the pinger
	inflight *pingRound // sent, not answered
	nextPing uint64
	closed   bool

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

type pingRound struct {
	id   uint64
	done chan struct{}
	err  error
}

func newMarkCache(client redis.UniversalClient, timeout time.Duration, max int, logger *slog.Logger) *markCache {
	c := &markCache{client: client, timeout: timeout, logger: logger, max: max, seed: maphash.MakeSeed(),
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	for i := range c.shards {
		c.shards[i].m = map[string]cachedMarks{}
	}
	c.done.Add(2)
	go c.receive()
	go c.pinger()
	return c
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
	if !c.testNoBarrier.Load() {
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
		n := len(s.m) / 8
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

// lose ends the current subscription's trust: the cache is emptied, and
// every barrier waiting fails (its reads look up instead).
func (c *markCache) lose(err error) {
	c.mu.Lock()
	c.gen++
	c.live = false
	rounds := []*pingRound{c.waiting, c.inflight}
	c.waiting, c.inflight = nil, nil
	c.mu.Unlock()
	c.clear()
	for _, r := range rounds {
		if r != nil {
			r.err = err
			close(r.done)
		}
	}
}

// barrier returns once a PING sent after it was called has been answered
// on the subscription, with every message before it applied.
func (c *markCache) barrier(ctx context.Context) error {
	c.mu.Lock()
	if !c.live {
		c.mu.Unlock()
		return errNotLive
	}
	r := c.waiting
	if r == nil {
		r = &pingRound{done: make(chan struct{})}
		c.waiting = r
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pinger sends one PING at a time for the reads that wait: those that
// come while one is out share the next.
func (c *markCache) pinger() {
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
			// load, some are about to wait too, and join this PING.
			runtime.Gosched()
			c.mu.Lock()
			r, ps := c.waiting, c.ps
			if r == nil || ps == nil || c.inflight != nil {
				c.mu.Unlock()
				break
			}
			c.waiting, c.inflight = nil, r
			c.nextPing++
			r.id = c.nextPing
			c.mu.Unlock()
			c.pings.Add(1)
			ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), subConn{}, true), c.timeout)
			err := ps.Ping(ctx, strconv.FormatUint(r.id, 10))
			cancel()
			if err != nil {
				c.fail(ps, err)
				continue
			}
			timer.Reset(c.timeout)
			select {
			case <-r.done:
				timer.Stop()
			case <-timer.C:
				// Redis hangs, or the connection does: trust nothing
				// until a new subscription is confirmed.
				c.fail(ps, errors.New("mark cache: no answer to PING within the timeout"))
			case <-c.stop:
				return
			}
		}
	}
}

// fail gives up on ps: closing it makes the receiver start another.
func (c *markCache) fail(ps *redis.PubSub, err error) {
	c.lose(err)
	_ = ps.Close()
}

// subConn marks the context of the subscription's calls, so that the
// tracker's check of each new connection can tell the subscription's.
type subConn struct{}

// noteServer is told the run id of every new connection's server. The
// subscription's is kept; any other connection that finds another server
// means the records may now go where the subscription does not listen
// (a Sentinel failover moves the pool at once, and a subscription only
// when the old master is reconfigured): the subscription starts over,
// and the cache is trusted again only once it is confirmed, on the
// server the client now dials.
func (c *markCache) noteServer(ctx context.Context, runID string) {
	if runID == "" {
		return // INFO refused: a restart still drops every connection
	}
	c.mu.Lock()
	if ctx.Value(subConn{}) != nil {
		c.server = runID
		c.mu.Unlock()
		return
	}
	moved := c.server != "" && c.server != runID
	ps := c.ps
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
		err := ps.Subscribe(ctx, MarksChannel)
		for err == nil {
			var msg any
			if msg, err = ps.Receive(ctx); err != nil {
				break
			}
			if c.apply(msg) && said {
				c.logger.Info("redis: the mark cache is subscribed again")
				said = false
			}
			backoff = 10 * time.Millisecond
		}
		c.lose(err)
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if !said && !closed {
			c.logger.Warn("redis: the mark cache lost its subscription; own-write reads ask Redis until it is back", "err", err)
			said = true
		}
		_ = ps.Close()
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// apply handles one message, and reports whether it confirmed a
// subscription.
func (c *markCache) apply(msg any) bool {
	switch m := msg.(type) {
	case *redis.Subscription:
		// Confirmed (again): a new subscription, since whatever came
		// before it may have missed messages.
		if m.Kind == "subscribe" && m.Channel == MarksChannel {
			c.lose(errNotLive)
			c.mu.Lock()
			c.live = true
			c.mu.Unlock()
			return true
		}
	case *redis.Message:
		if hold := c.testHold.Load(); hold != nil {
			<-*hold
		}
		if m.Payload == "*" {
			c.clear()
		} else {
			c.drop(m.Payload)
		}
	case *redis.Pong:
		c.mu.Lock()
		r := c.inflight
		if r != nil && strconv.FormatUint(r.id, 10) == m.Payload {
			c.inflight = nil
		} else {
			r = nil
		}
		c.mu.Unlock()
		if r != nil {
			close(r.done)
		}
		// Reads that queued meanwhile go out in the next PING.
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return false
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
		_ = ps.Close()
	}
	c.done.Wait()
	c.lose(errNotLive)
}
