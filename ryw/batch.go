package ryw

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many lookups share one pipeline.
const maxBatch = 128

// lookupCall is one Lookup waiting for its batch.
type lookupCall struct {
	user     string
	withTime bool          // read the time mark too (time mode)
	done     chan struct{} // closed once the fields below are set
	raw      rawMarks
}

// rawMarks is what one batch read for one user: the user's marks as
// stored (the time mark only if the call asked for it), and what the whole
// batch read once (the epoch and Redis's clock).
type rawMarks struct {
	at, token string
	epoch     string
	now       time.Time
	took      time.Duration
	err       error
}

// batcher coalesces the lookups that arrive while one is in flight into a
// single pipeline: TIME, and one MGET of ryw:epoch and every user's token
// mark, and time mark if the call asked for it (on a Redis Cluster, where
// one command cannot span slots: a GET of each key, which go-redis sends to
// each key's node). Under load that turns many round trips, each a write
// and a read on a socket in the API and a wake-up of Redis, into one. When
// nothing else is waiting, a lookup goes out at once, alone, as before.
//
// It is safe for read-your-writes because every call's commands leave after
// the call was made: a batch only ever holds calls that were waiting when
// it was sent, so each sees every write acknowledged before its request.
//
// There is no goroutine of its own: the call that finds no batch in flight
// sends one; when it comes back, the calls that queued meanwhile go out as
// the next batch, on a goroutine that sends batch after batch for as long
// as calls keep queuing. (One goroutine per batch cost more than the
// lookups' own parsing: each started on a small stack and grew it to run
// the pipeline, copystack 8% of the CPU in BenchmarkLookup.)
type batcher struct {
	client  redis.UniversalClient
	timeout time.Duration

	mu       sync.Mutex
	pending  []*lookupCall
	inflight bool

	batches atomic.Int64 // pipelines sent (ryw_redis_lookup_pipelines_total)
}

// lookup returns the user's raw marks, or ctx's error if the caller gives
// up first (its batch goes on for the others).
func (b *batcher) lookup(ctx context.Context, user string, withTime bool) rawMarks {
	c := &lookupCall{user: user, withTime: withTime, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	lead := !b.inflight
	b.inflight = true
	b.mu.Unlock()
	if lead {
		// Let the goroutines that are ready to run go first: under load,
		// some are about to look up too, and join this batch.
		runtime.Gosched()
		b.mu.Lock()
		first := b.take()
		b.mu.Unlock()
		// (first stays on this goroutine, and off the heap.)
		if following := b.next(b.run(first)); following != nil {
			go b.drain(following)
		}
	}
	select {
	case <-c.done:
		return c.raw
	case <-ctx.Done():
		return rawMarks{err: ctx.Err()}
	}
}

// take removes up to maxBatch pending calls; b.mu is held.
func (b *batcher) take() []*lookupCall {
	n := min(len(b.pending), maxBatch)
	batch := make([]*lookupCall, n)
	copy(batch, b.pending)
	rest := copy(b.pending, b.pending[n:])
	clear(b.pending[rest:])
	b.pending = b.pending[:rest]
	return batch
}

// next returns the calls that queued while a batch was in flight, to go
// out as the next batch, or ends the flight (nil). If that batch got no
// answer (Redis hangs or is gone), the calls that queued behind it fail at
// once with its error rather than wait out a timeout of their own: a
// lookup never waits much longer than the tracker's timeout, and the
// breaker then sheds the ones that follow.
func (b *batcher) next(prev error) []*lookupCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		b.inflight = false
		return nil
	}
	if prev != nil && unanswered(prev) {
		for _, c := range b.pending {
			c.raw = rawMarks{err: prev}
			close(c.done)
		}
		clear(b.pending)
		b.pending = b.pending[:0]
		b.inflight = false
		return nil
	}
	return b.take()
}

// drain sends batch, then each batch that queued meanwhile, until the
// flight ends.
func (b *batcher) drain(batch []*lookupCall) {
	for batch != nil {
		batch = b.next(b.run(batch))
	}
}

// run sends one batch, hands each call its answer, and returns the error
// the whole batch got, if any.
func (b *batcher) run(batch []*lookupCall) error {
	// The batch outlives any one caller: its own deadline only.
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	b.batches.Add(1)
	pipe := b.client.Pipeline()
	nowCmd := pipe.Time(ctx)
	var one *redis.SliceCmd          // epoch, then each user's marks
	var perKey [][2]*redis.StringCmd // a cluster's: each user's GETs (time, token)
	epochCmd := (*redis.StringCmd)(nil)
	if _, cluster := b.client.(*redis.ClusterClient); cluster {
		epochCmd = pipe.Get(ctx, EpochKey)
		perKey = make([][2]*redis.StringCmd, len(batch))
		for i, c := range batch {
			if c.withTime {
				perKey[i][0] = pipe.Get(ctx, MarkerKey(c.user))
			}
			perKey[i][1] = pipe.Get(ctx, TokenKey(c.user))
		}
	} else {
		keys := make([]string, 1, 1+2*len(batch))
		keys[0] = EpochKey
		for _, c := range batch {
			if c.withTime {
				keys = append(keys, MarkerKey(c.user))
			}
			keys = append(keys, TokenKey(c.user))
		}
		one = pipe.MGet(ctx, keys...)
	}
	start := time.Now()
	_, _ = pipe.Exec(ctx)
	shared := rawMarks{now: nowCmd.Val(), took: time.Since(start), err: nowCmd.Err()}
	var vals []any
	switch {
	case shared.err != nil:
	case one != nil:
		vals, shared.err = one.Result()
		if want := len(one.Args()) - 1; shared.err == nil && len(vals) != want {
			shared.err = fmt.Errorf("MGET of %d keys returned %d values", want, len(vals))
		}
		if shared.err == nil {
			shared.epoch, shared.err = str(vals[0])
		}
	default:
		shared.epoch, shared.err = epochCmd.Result()
		if errors.Is(shared.err, redis.Nil) {
			shared.err = nil
		}
	}
	next := 1 // the next user's first value in vals
	for i, c := range batch {
		c.raw = shared
		if c.raw.err == nil {
			if one != nil {
				var at any
				if c.withTime {
					at = vals[next]
					next++
				}
				c.raw.at, c.raw.token, c.raw.err = pair(at, vals[next])
				next++
			} else {
				c.raw.at, c.raw.token, c.raw.err = getPair(perKey[i])
			}
		}
		close(c.done)
	}
	return shared.err
}

// getPair reads one user's GETs (nil: not sent); a missing key is "".
func getPair(cmds [2]*redis.StringCmd) (at, token string, err error) {
	var vals [2]string
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", "", err
		}
		vals[i] = v
	}
	return vals[0], vals[1], nil
}

// pair reads the marks of one user; a missing key (or one not read) is "".
func pair(at, token any) (string, string, error) {
	a, err := str(at)
	if err != nil {
		return "", "", err
	}
	t, err := str(token)
	return a, t, err
}

// str reads one MGET value: a string, or nil for a missing key.
func str(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", fmt.Errorf("redis returned %T for a string key", v)
}
