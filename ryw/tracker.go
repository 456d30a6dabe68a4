package ryw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Marks is what the tracker knows of one user's writes.
type Marks struct {
	// Token is the WAL position of the user's last recorded write, zero
	// when none is recorded.
	Token Position
	// WrittenAt is when the user's last write was recorded, on the
	// tracker's own clock; zero when none is recorded, or when the lookup
	// did not ask for it.
	WrittenAt time.Time
	// Age is how long ago WrittenAt was, measured on the same clock, so that
	// no two machines' clocks are ever compared.
	Age time.Duration
	// Floor is at or past every write acknowledged before the tracker last
	// lost its state (a restart, a failover, a flush): a user without marks
	// may have written anything up to it.
	Floor LSN
	// Unreliable means the tracker may drop marks without a trace (Redis
	// may evict keys): a user without marks may have written anything.
	Unreliable bool
}

// HasWrite reports whether a write of the user is recorded.
func (m Marks) HasWrite() bool { return !m.Token.IsZero() || !m.WrittenAt.IsZero() }

// Tracker remembers each user's last write across all instances of the
// service.
type Tracker interface {
	// Record raises the user's marks to a write whose WAL position is
	// token, now, and returns the position the token mark held before
	// (zero if none). Marks never go down, whatever order writes are
	// recorded in: a position on a later timeline is later.
	Record(ctx context.Context, userID string, token Position) (prev Position, err error)
	// Repair replaces the user's token mark with to if it still holds
	// lost (a write a failover lost), and reports whether it did: of all
	// the instances that find the same lost mark, one does.
	Repair(ctx context.Context, userID string, lost, to Position) (bool, error)
	// Lookup returns the user's marks: the token and the floor always;
	// the time of the last write (WrittenAt, Age) only if withTime is
	// set, as only time mode's window needs it.
	Lookup(ctx context.Context, userID string, withTime bool) (Marks, error)
}

// DefaultTrackerTimeout bounds every Redis call of the tracker. Redis
// answers in well under a millisecond, but on a loaded machine a request can
// wait for the CPU for tens of milliseconds; a timeout that fires under
// normal load is a defect, since each one silently gives up offload.
const DefaultTrackerTimeout = 500 * time.Millisecond

// TrackerConfig configures a RedisTracker.
type TrackerConfig struct {
	// TTL is how long marks live after the user's last write.
	TTL time.Duration
	// Timeout bounds each Redis call (default DefaultTrackerTimeout).
	Timeout time.Duration
	// WAL gives the primary's position when Redis is found to have lost its
	// state: the floor that users without marks are then held to.
	WAL    WAL
	Logger *slog.Logger
	// Observe, when set, is told of every Redis round trip: "lookup" or
	// "record", how long it took, and its error. For metrics.
	Observe func(op string, took time.Duration, err error)
	// CacheUsers bounds how many users' marks the tracker keeps in
	// memory between their reads (default DefaultCacheUsers; negative:
	// no cache). A cached user's lookup asks Redis nothing of the user,
	// only waits for a barrier shared with every read in flight; Redis
	// pub/sub keeps the cache true (see Lookup). Not on a Redis Cluster.
	CacheUsers int
	// CacheLease lets the cache answer a lookup without a barrier of its
	// own for up to CacheLease after a shared barrier came back (default
	// DefaultCacheLease; negative: no lease, a barrier per group of lookups
	// in flight). In exchange, every Record waits until each cache that
	// holds a lease has acknowledged the record (a round trip through
	// Redis), or until that cache's lease has ended (a cache that is gone
	// or cut off). Every tracker on the same Redis must agree on whether
	// leases are on (see docs/CONSISTENCY.md, "The cache lease"). At most
	// MaxCacheLease. Not on a Redis Cluster.
	CacheLease time.Duration
}

// DefaultCacheLease is TrackerConfig.CacheLease's default: renewed a few
// times a second while reads come, and the longest a write waits for a
// cache that cannot acknowledge it.
const DefaultCacheLease = 250 * time.Millisecond

// MaxCacheLease is the longest TrackerConfig.CacheLease: every write
// waits it out.
const MaxCacheLease = time.Second

// RedisTracker keeps each user's marks in Redis, in two keys that live for
// the TTL after the user's last write:
//
//	user:{id}:last_write_utc  RFC 3339 UTC time of the last write, on Redis's clock
//	user:{id}:last_write_lsn  its WAL position, as 16 hex digits
//
// and one key for the whole service, ryw:epoch, which tells whether Redis
// still holds what it was told (see Lookup). Any go-redis client works:
// single server, Sentinel or Cluster.
type RedisTracker struct {
	client  redis.UniversalClient
	ttl     time.Duration
	timeout time.Duration
	wal     WAL
	logger  *slog.Logger
	observe func(op string, took time.Duration, err error)
	batch   *batcher
	cache   *markCache // nil: none
	channel string     // where records publish their user ("": nowhere)
	// lease: records wait until every cache that may trust a lease taken
	// before them has acknowledged them, or its lease has ended (see
	// TrackerConfig.CacheLease).
	lease      time.Duration
	leaseWaits struct{ acknowledged, lapsed atomic.Int64 }

	renewals singleflight.Group
	breaker  breaker
	mu       sync.Mutex
	epoch    string // the epoch last seen
	floor    LSN    // the highest floor of any epoch seen
	evicting bool   // Redis's maxmemory policy may evict marks
	// unlisted holds, in a Redis Cluster, the run ids of the nodes this
	// process has connected to that the epoch it last saw does not list.
	unlisted    map[string]bool
	cluster     bool
	infoRefused sync.Once
	// Redis's clock and this process's at the last lookup: if Redis's
	// clock jumps forward, marks expire early, which is a loss.
	redisAt, localAt time.Time
}

// NewRedisTracker builds a tracker. For single servers and Sentinel it
// checks each new connection's server (see checkServer), so call it with a
// client built by NewRedisClient, before the client is used.
func NewRedisTracker(client redis.UniversalClient, cfg TrackerConfig) *RedisTracker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTrackerTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string, time.Duration, error) {}
	}
	t := &RedisTracker{client: client, ttl: cfg.TTL, timeout: cfg.Timeout, wal: cfg.WAL, logger: cfg.Logger, observe: cfg.Observe,
		batch: &batcher{client: client, timeout: cfg.Timeout}}
	switch c := client.(type) {
	case *redis.Client:
		prev := c.Options().OnConnect
		c.Options().OnConnect = func(ctx context.Context, cn *redis.Conn) error {
			if prev != nil {
				if err := prev(ctx, cn); err != nil {
					return err
				}
			}
			// Bounded: a new epoch reads the primary's position, and
			// go-redis may hold a lock of its own meanwhile.
			ctx, cancel := context.WithTimeout(ctx, 2*t.timeout)
			defer cancel()
			return t.checkServer(ctx, cn)
		}
		// Records publish their user, and lookups may be cached (see
		// markCache). Only on a single server or Sentinel: a Cluster's
		// PUBLISH goes to every node while a record's keys live on one,
		// and no one message can show a subscription every node's
		// records; other clients (a Ring, say) shard the same way.
		t.channel = MarksChannel
		if cfg.CacheUsers == 0 {
			cfg.CacheUsers = DefaultCacheUsers
		}
		// Whether or not this process caches: others on the same Redis
		// may, and trust their leases.
		if cfg.CacheLease == 0 {
			cfg.CacheLease = DefaultCacheLease
		}
		t.lease = max(0, min(cfg.CacheLease, MaxCacheLease))
		if cfg.CacheUsers > 0 {
			t.cache = newMarkCache(c, cfg.Timeout, t.lease, cfg.CacheUsers, cfg.Logger)
			t.cache.unanswered = func(err error) { t.breaker.done(err, time.Now()) }
			t.cache.start()
		}
	case *redis.ClusterClient:
		// Connections go to many nodes, and the epoch key lives on one
		// of them. Each new connection notes its node's run id; a lookup
		// that finds a node its epoch does not list starts a new epoch
		// that lists it, before it trusts any mark (see noteClusterNode).
		t.cluster, t.unlisted = true, map[string]bool{}
		prev := c.Options().OnConnect
		c.Options().OnConnect = func(ctx context.Context, cn *redis.Conn) error {
			if prev != nil {
				if err := prev(ctx, cn); err != nil {
					return err
				}
			}
			return t.noteClusterNode(ctx, cn)
		}
	}
	return t
}

// ErrRedisPermission means the Redis user lacks a permission the tracker
// needs: a misconfiguration, reported at start-up rather than as writes
// that all fall back to the fence.
var ErrRedisPermission = errors.New("the Redis user lacks a permission read-your-writes needs")

// checkPermissions tries, once, what the tracker does on its channels:
// PUBLISH on the one its records publish on (every record), and, when it
// caches marks, PUBLISH (the barriers) and SUBSCRIBE on that one and on
// the cache's barrier channel. Redis answers NOPERM to any of them that
// the user's ACL denies; then every record would fail after its marks
// were written, and every write would wait for the fence, or the cache
// would never hear its barriers. Any other failure (Redis down, a
// timeout) is not this check's to judge: Redis is retried on use.
func (t *RedisTracker) checkPermissions(ctx context.Context) error {
	if t.channel == "" {
		return nil
	}
	denied := func(what string, err error) error {
		if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			return nil
		}
		return fmt.Errorf("%w: %s: %v (grant it, e.g. ACL SETUSER <user> +publish +subscribe '&%s' '&%s:barrier:*')", ErrRedisPermission, what, err, t.channel, t.channel)
	}
	// Subscribers take a message for the id of a user whose cached marks
	// to drop; this one names nobody.
	if err := denied("PUBLISH on "+t.channel, t.client.Publish(ctx, t.channel, "ryw:permission-check").Err()); err != nil {
		return err
	}
	if t.lease > 0 {
		// Every record reads the list of caches holding a lease; this
		// check asks no cache for anything.
		err := leaseCheck.Run(ctx, t.client, []string{CachesKey, EpochKey}, "", "").Err()
		if err != nil && strings.HasPrefix(err.Error(), "NOPERM") {
			return fmt.Errorf("%w: the key %s: %v (grant it, e.g. ACL SETUSER <user> '~ryw:*', or set the cache lease to 0)", ErrRedisPermission, CachesKey, err)
		}
	}
	if t.cache == nil {
		return nil
	}
	// A barrier channel's subscriber takes a message for a barrier's
	// number; this one is no number.
	barrier := t.cache.barrierChannel
	if err := denied("PUBLISH on "+barrier, t.client.Publish(ctx, barrier, "ryw:permission-check").Err()); err != nil {
		return err
	}
	for _, ch := range []string{t.channel, barrier} {
		ps := t.client.Subscribe(ctx, ch)
		_, err := ps.Receive(ctx)
		ps.Close()
		if err := denied("SUBSCRIBE to "+ch, err); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the tracker's cache, if it has one. The client stays open.
func (t *RedisTracker) Close() {
	if t.cache != nil {
		t.cache.close()
	}
}

// MarkerKey is the Redis key of the time of the user's last write.
func MarkerKey(userID string) string {
	return "user:" + userID + ":last_write_utc"
}

// TokenKey is the Redis key of the WAL position of the user's last write.
func TokenKey(userID string) string {
	return "user:" + userID + ":last_write_lsn"
}

// EpochKey names the current epoch of the tracker's Redis state:
// "<server run id> <floor> <random>". It is created when missing and
// replaced when the server changes; a change means marks may be lost.
const EpochKey = "ryw:epoch"

// raiseToken sets the key to ARGV[1] if that is a later position than what
// it holds, renews the TTL either way, and returns what it held (” for
// nothing), atomically. Tokens are stored as "<system>:<timeline><LSN>"
// with both numbers in fixed-width uppercase hex (see markValue), so that
// within one cluster comparing strings compares (timeline, LSN): Lua
// numbers are doubles and cannot hold every 64-bit LSN. A position of
// another cluster is replaced; one from before marks carried a timeline
// (16 hex digits) is compared by its LSN. It then publishes ARGV[4] (the
// user) on channel ARGV[3], unless that is empty: in the same script, so
// that no cache can miss a change that a lookup could see (see markCache).
var raiseToken = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local new = ARGV[1]
local replace = true
if cur then
  local i = string.find(cur, ':', 1, true)
  local j = string.find(new, ':', 1, true)
  if not i then
    replace = string.sub(new, j + 9) >= cur
  elseif string.sub(cur, 1, i) == string.sub(new, 1, j) then
    replace = string.sub(new, j + 1) > string.sub(cur, i + 1)
  end
end
if replace then
  redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return cur or ''
`)

// repairToken replaces the key's ARGV[1] with ARGV[2], keeping its TTL,
// publishes ARGV[4] on channel ARGV[3] (unless empty) and returns 1; or
// returns 0 if it holds anything else.
var repairToken = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
  return 1
end
return 0
`)

// raiseMarker stamps the key with Redis's own time, as fixed-width RFC 3339
// UTC (so that comparing strings compares times), if that is later than
// what it holds, and renews the TTL either way, atomically. Using Redis's
// clock for both the mark and its age means no instance's clock is ever
// compared with another's. Like raiseToken, it publishes ARGV[3] on
// channel ARGV[2] unless that is empty.
var raiseMarker = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local s = tonumber(t[1])
local days = math.floor(s / 86400)
local rem = s - days * 86400
local z = days + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local d = doy - math.floor((153 * mp + 2) / 5) + 1
local m = mp < 10 and mp + 3 or mp - 9
local y = yoe + era * 400
if m <= 2 then y = y + 1 end
local v = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
  math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, tonumber(t[2]))
local cur = redis.call('GET', KEYS[1])
if (not cur) or v > cur then
  redis.call('SET', KEYS[1], v, 'PX', ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return v
`)

// replaceEpoch sets KEYS[1] to ARGV[2] if it still holds ARGV[1] ("" for
// missing), and returns what it holds afterwards: of instances that find
// the same change at once, one renews the epoch and the others adopt it.
// A renewal publishes "*" on channel ARGV[3] unless that is empty: caches
// then forget every user, and look each up again under the new epoch.
var replaceEpoch = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], '*') end
  return ARGV[2]
end
return cur
`)

// Record raises both of the user's marks in one round trip. With the cache
// lease it then waits until every other cache holding a lease has
// acknowledged the record, or its lease has ended (a process without a
// cache of its own hears no acknowledgement, and waits for the leases).
func (t *RedisTracker) Record(ctx context.Context, userID string, token Position) (Position, error) {
	parent := ctx
	start := time.Now()
	if !t.breaker.allow(start) {
		t.observe("record", 0, ErrTrackerShedding)
		return Position{}, ErrTrackerShedding
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	prev, lw, err := t.record(ctx, userID, token, true)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted and forgot the scripts: send them whole.
		prev, lw, err = t.record(ctx, userID, token, false)
	}
	if t.cache != nil {
		// Not only when the message comes back: this process's own
		// subscription may be on another server than its record went to
		// for a moment (a Sentinel failover), and a failed record may
		// still have raised the marks.
		t.cache.drop(userID)
	}
	t.breaker.done(err, time.Now())
	t.observe("record", time.Since(start), err)
	if err != nil {
		return Position{}, fmt.Errorf("record the write in redis: %w", err)
	}
	if t.lease > 0 {
		if err := t.waitForCaches(parent, lw); err != nil {
			return Position{}, fmt.Errorf("record the write in redis: waiting for the caches' acknowledgements: %w", err)
		}
	}
	if prev == "" {
		return Position{}, nil
	}
	p, err := parseMarkValue(prev)
	if err != nil {
		// Replaced by a valid one: nothing to judge.
		return Position{}, nil
	}
	return p, nil
}

// Repair replaces a lost token mark (see Tracker).
func (t *RedisTracker) Repair(ctx context.Context, userID string, lost, to Position) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	n, err := repairToken.Run(ctx, t.client, []string{TokenKey(userID)}, markValue(lost), markValue(to), t.channel, userID).Int()
	if t.cache != nil {
		t.cache.drop(userID)
	}
	if err != nil {
		return false, fmt.Errorf("repair the mark in redis: %w", err)
	}
	return n == 1, nil
}

func (t *RedisTracker) record(ctx context.Context, userID string, token Position, bySHA bool) (string, leaseWait, error) {
	ttl := t.ttl.Milliseconds()
	pipe := t.client.Pipeline()
	run := (*redis.Script).Eval
	if bySHA {
		run = (*redis.Script).EvalSha
	}
	marker := run(raiseMarker, ctx, pipe, []string{MarkerKey(userID)}, ttl, t.channel, userID)
	tok := run(raiseToken, ctx, pipe, []string{TokenKey(userID)}, markValue(token), ttl, t.channel, userID)
	var check *redis.Cmd
	var seq uint64
	own, ask := "", ""
	if t.lease > 0 {
		// After both messages: a cache that acknowledges this one has
		// applied them.
		channel := ""
		if t.cache != nil {
			seq = t.cache.seq.Add(1)
			t.cache.acks.expect(seq)
			own, channel = t.cache.id, t.channel
			ask = ackPrefix + own + " " + strconv.FormatUint(seq, 10)
		}
		check = run(leaseCheck, ctx, pipe, []string{CachesKey, EpochKey}, channel, ask)
	}
	_, _ = pipe.Exec(ctx)
	prev, lw, err := t.recorded(marker, tok, check, own)
	if err != nil && seq != 0 {
		t.cache.acks.forget(seq)
	}
	lw.seq = seq
	return prev, lw, err
}

// recorded reads the answers of record's pipeline.
func (t *RedisTracker) recorded(marker, tok, check *redis.Cmd, own string) (string, leaseWait, error) {
	if err := marker.Err(); err != nil {
		return "", leaseWait{}, err
	}
	prev, err := tok.Text()
	if err != nil || check == nil {
		return prev, leaseWait{}, err
	}
	vals, err := check.Slice()
	if err != nil {
		return "", leaseWait{}, err
	}
	lw, err := parseLeaseCheck(vals, time.Now(), t.lease, t.lease/8, own)
	return prev, lw, err
}

// waitForCaches waits until every cache that may trust a lease taken
// before the record has acknowledged it, or its lease has ended.
func (t *RedisTracker) waitForCaches(ctx context.Context, w leaseWait) error {
	a := newAcks() // no cache: no acknowledgements come, only the ends of leases
	if t.cache != nil {
		a = t.cache.acks
		defer a.forget(w.seq)
	}
	lapsed, err := a.wait(ctx, w)
	if err == nil {
		if lapsed {
			t.leaseWaits.lapsed.Add(1)
		} else {
			t.leaseWaits.acknowledged.Add(1)
		}
	}
	return err
}

// LeaseWaits is how many records waited for the caches that trust a
// lease (TrackerConfig.CacheLease) until every one acknowledged them, and
// how many until a lease ended: a cache that did not acknowledge in time
// (gone, cut off, or too busy), or a Redis that lost its list of caches.
func (t *RedisTracker) LeaseWaits() (acknowledged, lapsed int64) {
	return t.leaseWaits.acknowledged.Load(), t.leaseWaits.lapsed.Load()
}

// Lookup reads the user's token mark (and time mark, if withTime), the
// epoch and Redis's clock in one round trip, shared with the lookups made
// at the same time (see batcher). An epoch that is missing or other than
// the one this instance knew means Redis lost its state since: the marks
// that are missing may have been lost, so Marks.Floor then holds the user
// to everything the primary had written when the loss was found. Redis's
// clock is read whatever the mode: a clock that jumped forward expired
// marks early, which is a loss too.
//
// With a cache (TrackerConfig.CacheUsers), a user looked up before is
// answered from memory once a message published after the call has come back on
// the cache's subscription: every record publishes its user there, in the
// script that raises the marks, so by then every write acknowledged before
// the call has dropped the user from the cache (see markCache). Losing the
// subscription empties the cache.
func (t *RedisTracker) Lookup(ctx context.Context, userID string, withTime bool) (Marks, error) {
	var tk ticket
	// Not while the breaker is open or trying: Redis failed to answer a
	// moment ago, and the lookup below sheds or makes the trial.
	if t.cache != nil && t.breaker.closed() {
		if e, ok := t.cache.get(ctx, userID, withTime); ok {
			m := Marks{Token: e.token}
			if withTime && !e.at.IsZero() {
				m.WrittenAt = e.at
				m.Age = e.redisNow.Add(time.Since(e.readAt)).Sub(e.at)
			}
			t.mu.Lock()
			m.Floor, m.Unreliable = t.floor, t.evicting
			t.mu.Unlock()
			return m, nil
		}
	}
	if t.cache != nil {
		tk = t.cache.take(userID)
	}
	if !t.breaker.allow(time.Now()) {
		t.observe("lookup", 0, ErrTrackerShedding)
		return Marks{}, ErrTrackerShedding
	}
	// No deadline of its own: the batch it joins has one (the timeout).
	raw := t.batch.lookup(ctx, userID, withTime)
	failed := raw.err
	if errors.Is(failed, redis.Nil) {
		failed = nil
	}
	answered := time.Now()
	t.breaker.done(failed, answered)
	t.observe("lookup", raw.took, failed)
	if failed != nil {
		return Marks{}, fmt.Errorf("read marks from redis: %w", failed)
	}
	var m Marks
	if v := raw.at; v != "" {
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			// A mark we cannot read says nothing safe: a failure sends the
			// read to the primary.
			return Marks{}, fmt.Errorf("marker %s holds %q, not an RFC 3339 time", MarkerKey(userID), v)
		}
		m.WrittenAt, m.Age = at, raw.now.Sub(at)
	}
	if v := raw.token; v != "" {
		p, err := parseMarkValue(v)
		if err != nil {
			return Marks{}, fmt.Errorf("token %s holds %q: %w", TokenKey(userID), v, err)
		}
		m.Token = p
	}
	epoch := raw.epoch
	if t.clockJumped(raw.now, answered) {
		// Marks may have expired early: the same as losing them.
		renewed, err := t.renewOnce(ctx, epoch)
		if err != nil {
			return Marks{}, err
		}
		epoch = renewed
	}
	if t.cluster {
		listed, err := t.listNodes(ctx, epoch)
		if err != nil {
			return Marks{}, err
		}
		epoch = listed
	}
	floor, err := t.adopt(ctx, epoch)
	if err != nil {
		return Marks{}, err
	}
	m.Floor = floor
	t.mu.Lock()
	m.Unreliable = t.evicting
	t.mu.Unlock()
	if t.cache != nil {
		// answered is after Redis read its clock: ages computed from it
		// later are, if anything, short, which keeps time mode's window
		// open longer, never shorter.
		t.cache.put(userID, tk, cachedMarks{token: m.Token, at: m.WrittenAt, withTime: withTime, redisNow: raw.now, readAt: answered})
	}
	return m, nil
}

// CachedLookups is how many lookups the cache answered, and how many
// barriers it published for them and for the lookups it then left to Redis (see
// TrackerConfig.CacheUsers).
func (t *RedisTracker) CachedLookups() (hits, barriers int64) {
	if t.cache == nil {
		return 0, 0
	}
	return t.cache.hits.Load(), t.cache.barriers.Load()
}

// LookupPipelines is how many pipelines lookups have sent: fewer than
// lookups when lookups made at the same time shared one (see batcher).
func (t *RedisTracker) LookupPipelines() int64 { return t.batch.batches.Load() }

// adopt returns the floor after seeing epoch, renewing a missing epoch.
func (t *RedisTracker) adopt(ctx context.Context, epoch string) (LSN, error) {
	t.mu.Lock()
	if epoch != "" && epoch == t.epoch {
		defer t.mu.Unlock()
		return t.floor, nil
	}
	t.mu.Unlock()
	if epoch == "" {
		renewed, err := t.renewOnce(ctx, "")
		if err != nil {
			return 0, err
		}
		epoch = renewed
	}
	return t.learn(epoch)
}

// noteClusterNode runs on every new connection to a node of a Redis
// Cluster. A master that restarted empty, or a replica promoted before it
// had its master's newest marks, is a node with a run id of its own, and
// reaching it always takes a new connection: this notes the run id before
// any command runs on the connection, so that the lookup that sent the
// command finds it unlisted, and starts a new epoch (whose floor is past
// every write acknowledged before the loss) before it trusts the marks it
// read. It does not call the cluster itself: that could need a connection
// of the pool being filled.
func (t *RedisTracker) noteClusterNode(ctx context.Context, cn *redis.Conn) error {
	fields, err := t.serverInfo(ctx, cn, "server", "memory")
	if err != nil {
		return err
	}
	t.noteEviction(fields["maxmemory"], fields["maxmemory_policy"])
	if id := fields["run_id"]; id != "" {
		t.mu.Lock()
		if !epochLists(t.epoch, id) {
			t.unlisted[id] = true
		}
		t.mu.Unlock()
	}
	return nil
}

// listNodes returns epoch, or, when this process has connected to cluster
// nodes that epoch does not list (or there is no epoch), the epoch that
// replaced it and lists them. It tries a few times, since another instance
// may replace the epoch at the same time without them.
func (t *RedisTracker) listNodes(ctx context.Context, epoch string) (string, error) {
	for range 3 {
		t.mu.Lock()
		var missing []string
		for id := range t.unlisted {
			if epochLists(epoch, id) {
				delete(t.unlisted, id)
			} else {
				missing = append(missing, id)
			}
		}
		t.mu.Unlock()
		if len(missing) == 0 && epoch != "" {
			return epoch, nil
		}
		renewed, err := t.renewOnce(ctx, epoch)
		if err != nil {
			return "", err
		}
		epoch = renewed
	}
	return "", errors.New("redis cluster: could not start an epoch that lists every node connected to")
}

// epochLists says whether epoch was made for a server with run id id.
func epochLists(epoch, id string) bool {
	ids, _, err := parseEpoch(epoch)
	return err == nil && slices.Contains(strings.Split(ids, ","), id)
}

// maxListedNodes bounds a cluster epoch's list of run ids: enough for every
// node of a large cluster and its recent failovers.
const maxListedNodes = 64

// clusterIDs is the list of run ids for an epoch that replaces old: old's,
// then the unlisted ones, the oldest dropped beyond maxListedNodes.
func (t *RedisTracker) clusterIDs(old string) string {
	var ids []string
	if o, _, err := parseEpoch(old); err == nil && o != "-" {
		ids = strings.Split(o, ",")
	}
	t.mu.Lock()
	var add []string
	for id := range t.unlisted {
		if !slices.Contains(ids, id) {
			add = append(add, id)
		}
	}
	t.mu.Unlock()
	slices.Sort(add)
	ids = append(ids, add...)
	if len(ids) > maxListedNodes {
		ids = ids[len(ids)-maxListedNodes:]
	}
	return strings.Join(ids, ",")
}

// renewOnce renews the epoch that holds old, once for all the lookups that
// find the same loss at the same time. The renewal outlives the caller that
// started it (up to twice the timeout), so that one client going away does
// not fail the others' lookups.
func (t *RedisTracker) renewOnce(ctx context.Context, old string) (string, error) {
	renewed, err, _ := t.renewals.Do(old, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*t.timeout)
		defer cancel()
		return t.renew(ctx, t.client, old, "")
	})
	if err != nil {
		return "", err
	}
	return renewed.(string), nil
}

// clockJumped reports whether Redis's clock advanced more than this
// process's since the last lookup (by over a second and a hundredth of the
// time between them): keys then expire early, all at once.
func (t *RedisTracker) clockJumped(redisNow, localNow time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	jumped := false
	if !t.localAt.IsZero() {
		local := localNow.Sub(t.localAt)
		if gain := redisNow.Sub(t.redisAt) - local; gain > time.Second+local/100 {
			t.logger.Warn("redis's clock jumped forward: marks may have expired early", "by", gain)
			jumped = true
		}
	}
	if localNow.After(t.localAt) {
		t.redisAt, t.localAt = redisNow, localNow
	}
	return jumped
}

// learn takes epoch as the current one and returns the floor.
func (t *RedisTracker) learn(epoch string) (LSN, error) {
	_, floor, err := parseEpoch(epoch)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if epoch == t.epoch {
		return t.floor, nil
	}
	if t.epoch != "" && floor > t.floor {
		t.logger.Warn("redis lost its state: users without marks are held to the floor", "floor", floor.String(), "epoch", epoch)
	}
	t.epoch, t.floor = epoch, max(t.floor, floor)
	return t.floor, nil
}

// renew replaces the epoch that holds old ("" for none) by one for the
// server runID, whose floor is the primary's position now, and returns the
// epoch in force afterwards (another instance's, if it renewed first).
func (t *RedisTracker) renew(ctx context.Context, c scripter, old, runID string) (string, error) {
	if t.wal == nil {
		return "", errors.New("redis lost its state and the tracker has no WAL to take a floor from")
	}
	if t.cluster {
		runID = t.clusterIDs(old)
	} else if runID == "" {
		fields, err := t.serverInfo(ctx, c, "server")
		if err != nil {
			return "", err
		}
		runID = fields["run_id"]
	}
	floor, err := t.wal.CurrentLSN(ctx)
	if err != nil {
		return "", fmt.Errorf("redis lost its state; read the primary's position for the floor: %w", err)
	}
	var random [8]byte
	_, _ = rand.Read(random[:])
	if runID == "" {
		runID = "-"
	}
	fresh := fmt.Sprintf("%s %016X %s", runID, uint64(floor), hex.EncodeToString(random[:]))
	epoch, err := replaceEpoch.Run(ctx, c, []string{EpochKey}, old, fresh, t.channel).Text()
	if err != nil {
		return "", fmt.Errorf("renew the epoch in redis: %w", err)
	}
	if epoch == fresh {
		t.mu.Lock()
		first := t.epoch == "" && old == ""
		t.mu.Unlock()
		if first {
			// A new Redis, or one emptied before this instance knew it.
			t.logger.Info("no tracker epoch in redis: started one; users without marks are held to the floor", "floor", floor.String())
		} else {
			t.logger.Warn("started a new tracker epoch: marks recorded before it may be lost", "floor", floor.String(), "replaced", old)
		}
	}
	return epoch, nil
}

// scripter is what renew needs of a client or a connection.
type scripter interface {
	redis.Scripter
	Info(ctx context.Context, sections ...string) *redis.StringCmd
}

func parseEpoch(epoch string) (runID string, floor LSN, err error) {
	f := strings.Fields(epoch)
	if len(f) == 3 && len(f[1]) == 16 {
		if n, err := strconv.ParseUint(f[1], 16, 64); err == nil {
			return f[0], LSN(n), nil
		}
	}
	return "", 0, fmt.Errorf("redis key %s holds %q, not an epoch; delete it and ryw starts a new one", EpochKey, epoch)
}

// checkServer runs on every new connection (single server and Sentinel):
// a restart or a failover always means new connections, so this is where a
// server that may have lost marks is found, before any command runs on it.
// A server other than the one the epoch was made for, or no epoch at all,
// starts a new epoch. It also notes whether the server may evict marks.
func (t *RedisTracker) checkServer(ctx context.Context, cn *redis.Conn) error {
	fields, err := t.serverInfo(ctx, cn, "server", "memory")
	if err != nil {
		return err
	}
	t.noteEviction(fields["maxmemory"], fields["maxmemory_policy"])
	runID := fields["run_id"]
	if t.cache != nil {
		t.cache.noteServer(ctx, runID)
	}
	epoch, err := cn.Get(ctx, EpochKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis GET %s on connect: %w", EpochKey, err)
	}
	if epoch != "" {
		if id, _, err := parseEpoch(epoch); err == nil && (id == runID || runID == "") {
			_, err = t.learn(epoch)
			return err
		}
	}
	epoch, err = t.renew(ctx, cn, epoch, runID)
	if err != nil {
		return err
	}
	_, err = t.learn(epoch)
	return err
}

// serverInfo reads INFO sections into one map. A server that refuses INFO
// (renamed away, or a proxy that does not pass it) gives an empty map: the
// tracker then relies on the epoch key alone, and says so once.
func (t *RedisTracker) serverInfo(ctx context.Context, c scripter, sections ...string) (map[string]string, error) {
	fields := map[string]string{}
	for _, section := range sections {
		info, err := c.Info(ctx, section).Result()
		var refused redis.Error
		if errors.As(err, &refused) {
			t.infoRefused.Do(func() {
				t.logger.Warn("redis refuses INFO: server changes are found by the epoch key alone", "err", err)
			})
			return map[string]string{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("redis INFO %s: %w", section, err)
		}
		parseInfo(info, fields)
	}
	return fields, nil
}

func (t *RedisTracker) noteEviction(maxmemory, policy string) {
	evicting := maxmemory != "" && maxmemory != "0" && policy != "" && policy != "noeviction"
	t.mu.Lock()
	defer t.mu.Unlock()
	if evicting && !t.evicting {
		t.logger.Error("redis may evict read-your-writes marks (maxmemory with an eviction policy): users without marks are read from the primary; set maxmemory-policy noeviction",
			"maxmemory", maxmemory, "policy", policy)
	}
	t.evicting = evicting
}

func parseInfo(info string, fields map[string]string) {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
}
