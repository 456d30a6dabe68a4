package ryw

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many lookups share one pipeline.
const maxBatch = 128

// lookupCall is one Lookup waiting for its batch.
type lookupCall struct {
	user string
	done chan struct{} // closed once the fields below are set
	raw  rawMarks
}

// rawMarks is what one batch read for one user: the user's two marks as
// stored, and what the whole batch read once (the epoch and Redis's clock).
type rawMarks struct {
	at, token string
	epoch     string
	now       time.Time
	took      time.Duration
	err       error
}

// batcher coalesces the lookups that arrive while one is in flight into a
// single pipeline: TIME and GET ryw:epoch once, then one MGET of the two
// marks per user (they share the {id} hash tag, so it is one slot on a
// Redis Cluster too). Under load that turns many round trips, each a write
// and a read on a socket in the API and a wake-up of Redis, into one. When
// nothing else is waiting, a lookup goes out at once, alone, as before.
//
// It is safe for read-your-writes because every call's commands leave after
// the call was made: a batch only ever holds calls that were waiting when
// it was sent, so each sees every write acknowledged before its request.
//
// There is no goroutine of its own: the call that finds no batch in flight
// sends one; when it comes back, the calls that queued meanwhile go out as
// the next batch, on a goroutine that lives as long as there are some.
type batcher struct {
	client  redis.UniversalClient
	timeout time.Duration

	mu       sync.Mutex
	pending  []*lookupCall
	inflight bool

	batches atomic.Int64 // pipelines sent, for tests
}

// lookup returns the user's raw marks, or ctx's error if the caller gives
// up first (its batch goes on for the others).
func (b *batcher) lookup(ctx context.Context, user string) rawMarks {
	c := &lookupCall{user: user, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	var batch []*lookupCall
	if !b.inflight {
		b.inflight = true
		batch = b.take()
	}
	b.mu.Unlock()
	if batch != nil {
		b.run(batch)
		b.next()
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

// next sends the calls that queued while a batch was in flight, or ends
// the flight.
func (b *batcher) next() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		b.inflight = false
		return
	}
	batch := b.take()
	go func() {
		b.run(batch)
		b.next()
	}()
}

// run sends one batch and hands each call its answer.
func (b *batcher) run(batch []*lookupCall) {
	// The batch outlives any one caller: its own deadline only.
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	b.batches.Add(1)
	pipe := b.client.Pipeline()
	nowCmd := pipe.Time(ctx)
	epochCmd := pipe.Get(ctx, EpochKey)
	marks := make([]*redis.SliceCmd, len(batch))
	for i, c := range batch {
		marks[i] = pipe.MGet(ctx, MarkerKey(c.user), TokenKey(c.user))
	}
	start := time.Now()
	_, _ = pipe.Exec(ctx)
	took := time.Since(start)
	shared := rawMarks{now: nowCmd.Val(), epoch: epochCmd.Val(), took: took}
	for _, err := range []error{nowCmd.Err(), epochCmd.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) {
			shared.err = err
			break
		}
	}
	for i, c := range batch {
		c.raw = shared
		if c.raw.err == nil {
			c.raw.at, c.raw.token, c.raw.err = markValues(marks[i])
		}
		close(c.done)
	}
}

// markValues reads an MGET of the two marks; a missing key is "".
func markValues(cmd *redis.SliceCmd) (at, token string, err error) {
	if err := cmd.Err(); err != nil {
		return "", "", err
	}
	vals := cmd.Val()
	if len(vals) != 2 {
		return "", "", fmt.Errorf("MGET of the two marks returned %d values", len(vals))
	}
	str := func(v any) (string, error) {
		switch v := v.(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		}
		return "", errors.New("a mark is not a string")
	}
	if at, err = str(vals[0]); err != nil {
		return "", "", err
	}
	token, err = str(vals[1])
	return at, token, err
}
