package ryw

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// CachesKey is the Redis hash of the mark caches that trust a lease (see
// TrackerConfig.CacheLease): each cache's id and when its lease ends, in
// milliseconds of Redis's clock, and two fields of the hash's own: the
// epoch it was made under ("~epoch") and when ("~since"). A hash of another
// epoch (Redis restarted empty, or another server took over) is started
// anew, and every write waits out a whole lease until it is a lease old:
// a cache it lost may still trust its lease.
const CachesKey = "ryw:caches"

// ackPrefix begins the message a record publishes on MarksChannel after
// its user's, asking every cache that trusts a lease to acknowledge it:
// "<ackPrefix><writer's cache id> <sequence number>". A cache of a build
// before the lease takes it for a user's id, and drops a user that does
// not exist.
const ackPrefix = "\x00ack "

// ackReply begins a cache's acknowledgement, published on the writer's
// own channel: "<ackReply><cache id> <number>[,<number>...]": it has
// applied the writer's records of those numbers (and every message before
// their requests).
const ackReply = "ack "

// cachesNow begins both scripts on the hash KEYS[1] of caches: caches_now()
// returns Redis's time in milliseconds, first starting the hash anew
// (recording the epoch, KEYS[2]'s value, and when) if it was made under
// another epoch or is missing.
const cachesNow = `
if redis.replicate_commands then redis.replicate_commands() end
local function caches_now()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = redis.call('GET', KEYS[2]) or ''
  if redis.call('HGET', KEYS[1], '~epoch') ~= epoch then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], '~epoch', epoch, '~since', now)
  end
  return now
end
`

// registerBarrier publishes a barrier (ARGV[2] on channel ARGV[1]) and, if
// a subscriber heard it, registers cache ARGV[3] in the hash KEYS[1] as
// trusting a lease until ARGV[4] milliseconds from now, on Redis's clock.
// A hash of an epoch other than KEYS[2]'s is started anew. It returns the
// number of subscribers that heard the barrier.
var registerBarrier = redis.NewScript(cachesNow + `
local n = redis.call('PUBLISH', ARGV[1], ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[3], caches_now() + tonumber(ARGV[4]))
end
return n
`)

// leaseCheck runs after a record's scripts, in the same pipeline: it asks
// the caches to acknowledge the record (ARGV[2] on channel ARGV[1], unless
// ARGV[1] is empty) and returns Redis's time in milliseconds, when the
// hash KEYS[1] was started, and the caches whose leases have not ended,
// each followed by the end of its lease. A hash of another epoch than
// KEYS[2]'s is started anew (its caches are forgotten: the writer waits out
// a whole lease instead); ended leases (and anything that is not a time)
// are removed.
var leaseCheck = redis.NewScript(cachesNow + `
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
local now = caches_now()
local all = redis.call('HGETALL', KEYS[1])
local out = {tostring(now), ''}
for i = 1, #all, 2 do
  local k, v = all[i], all[i + 1]
  if k == '~since' then
    out[2] = v
  elseif k ~= '~epoch' then
    local e = tonumber(v)
    if e and e > now then
      out[#out + 1] = k
      out[#out + 1] = v
    else
      redis.call('HDEL', KEYS[1], k)
    end
  end
end
return out
`)

// deregister removes cache ARGV[1] from the hash, when it stops.
var deregister = redis.NewScript(`return redis.call('HDEL', KEYS[1], ARGV[1])`)

// leaseWait is what a record must wait for before its write may be
// acknowledged: each cache that may trust a lease taken before the record
// either acknowledges it or reaches its deadline, the end of its lease
// (on this process's clock, with a margin for clocks that run at
// different rates); and no cache of a hash that Redis lost trusts a lease
// after restart.
type leaseWait struct {
	seq     uint64
	caches  map[string]time.Time // cache id -> deadline
	restart time.Time            // zero: the hash is older than a lease
}

// parseLeaseCheck reads leaseCheck's answer, received at answered, into
// what the record waits for; own is the writer's own cache (its own record
// drops the user directly), margin the allowance for clock rates.
func parseLeaseCheck(vals []any, answered time.Time, lease, margin time.Duration, own string) (leaseWait, error) {
	str := func(i int) string { s, _ := vals[i].(string); return s }
	if len(vals) < 2 || len(vals)%2 != 0 {
		return leaseWait{}, fmt.Errorf("lease check: %d values", len(vals))
	}
	now, err := strconv.ParseInt(str(0), 10, 64)
	if err != nil {
		return leaseWait{}, fmt.Errorf("lease check: time %q", str(0))
	}
	// A deadline of Redis's clock, on this process's: the time left then,
	// counted from when the answer arrived (later than when it was given).
	at := func(ms int64) time.Time {
		return answered.Add(time.Duration(ms-now)*time.Millisecond + margin)
	}
	w := leaseWait{caches: map[string]time.Time{}}
	if since, err := strconv.ParseInt(str(1), 10, 64); err != nil {
		// No start recorded: as if the hash had been started now.
		w.restart = at(now + (lease + lease/8).Milliseconds())
	} else if end := since + (lease + lease/8).Milliseconds(); end > now {
		w.restart = at(end)
	}
	for i := 2; i+1 < len(vals); i += 2 {
		id := str(i)
		end, err := strconv.ParseInt(str(i+1), 10, 64)
		if err != nil {
			return leaseWait{}, fmt.Errorf("lease check: lease end %q of %s", str(i+1), id)
		}
		if id != own {
			w.caches[id] = at(end)
		}
	}
	return w, nil
}

// acks collects the acknowledgements of this process's records that come
// back on its cache's channel: for each record in flight, the caches that
// have applied it. Records on different connections reach Redis in any
// order, so each is acknowledged by its own number, not by the highest.
type acks struct {
	mu      sync.Mutex
	records map[uint64]map[string]bool
	changed chan struct{} // closed, and replaced, on every acknowledgement
}

func newAcks() *acks {
	return &acks{records: map[uint64]map[string]bool{}, changed: make(chan struct{})}
}

// expect makes room for the acknowledgements of record seq: call it before
// the record is sent, and forget once it has been waited for.
func (a *acks) expect(seq uint64) {
	a.mu.Lock()
	a.records[seq] = map[string]bool{}
	a.mu.Unlock()
}

func (a *acks) forget(seq uint64) {
	a.mu.Lock()
	delete(a.records, seq)
	a.mu.Unlock()
}

// note records that cache id applied the records seqs.
func (a *acks) note(id string, seqs []uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	noted := false
	for _, seq := range seqs {
		if by, ok := a.records[seq]; ok && !by[id] {
			by[id] = true
			noted = true
		}
	}
	if noted {
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

// wait returns once every cache of w has acknowledged w.seq or reached
// its deadline, and the restart deadline has passed; or ctx's error.
// lapsed says whether a deadline, not acknowledgements alone, ended it.
// With w.seq 0 (the writer asked for no acknowledgement) only deadlines
// count.
func (a *acks) wait(ctx context.Context, w leaseWait) (lapsed bool, err error) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lapsed = !w.restart.IsZero()
	for {
		now := time.Now()
		var next time.Time
		if w.restart.After(now) {
			next = w.restart
		}
		a.mu.Lock()
		changed := a.changed
		by := a.records[w.seq]
		for id, deadline := range w.caches {
			switch {
			case w.seq > 0 && by[id]:
				delete(w.caches, id)
			case !now.Before(deadline):
				delete(w.caches, id)
				lapsed = true
			case next.IsZero() || deadline.Before(next):
				next = deadline
			}
		}
		a.mu.Unlock()
		if next.IsZero() {
			return lapsed, nil
		}
		timer.Reset(next.Sub(now))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return lapsed, context.Cause(ctx)
		}
	}
}

// parseAck reads "<id> <seq>[,<seq>...]".
func parseAck(s string) (id string, seqs []uint64, ok bool) {
	id, list, found := strings.Cut(s, " ")
	if !found || id == "" {
		return "", nil, false
	}
	for n := range strings.SplitSeq(list, ",") {
		seq, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			return "", nil, false
		}
		seqs = append(seqs, seq)
	}
	return id, seqs, true
}

// acker sends a cache's acknowledgements: for each writer, the numbers of
// its records applied since the last pipeline, in one message, and one
// pipeline for all the writers that asked meanwhile.
type acker struct {
	client  *redis.Client
	id      string
	timeout time.Duration
	mu      sync.Mutex
	pending map[string][]string // writer's cache id -> its records' numbers
	kick    chan struct{}
}

func (k *acker) ask(writer, seq string) {
	k.mu.Lock()
	k.pending[writer] = append(k.pending[writer], seq)
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// run sends acknowledgements until stop closes. One that fails is not
// sent again: the writer waits for the end of this cache's lease instead.
func (k *acker) run(stop <-chan struct{}, logger interface{ Debug(string, ...any) }) {
	for {
		select {
		case <-stop:
			return
		case <-k.kick:
		}
		k.mu.Lock()
		pending := k.pending
		k.pending = map[string][]string{}
		k.mu.Unlock()
		if len(pending) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
		pipe := k.client.Pipeline()
		for writer, seqs := range pending {
			pipe.Publish(ctx, MarksChannel+":barrier:"+writer, ackReply+k.id+" "+strings.Join(seqs, ","))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, context.Canceled) {
			logger.Debug("mark cache: acknowledgements not sent; their writers wait for the end of this cache's lease", "err", err)
		}
		cancel()
	}
}
