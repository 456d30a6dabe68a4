package ryw

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tracker remembers when each user last wrote, across all instances of the
// service.
type Tracker interface {
	// RecordWrite notes that the user's write committed at at.
	RecordWrite(ctx context.Context, userID string, at time.Time) error
	// LastWrite returns the time of the user's last recorded write; ok is
	// false when there is none (or it has expired).
	LastWrite(ctx context.Context, userID string) (at time.Time, ok bool, err error)
	// RecordLSN raises the user's causal token to lsn (never lowers it).
	RecordLSN(ctx context.Context, userID string, lsn LSN) error
	// LastLSN returns the user's causal token; ok is false when there is
	// none.
	LastLSN(ctx context.Context, userID string) (lsn LSN, ok bool, err error)
}

// DefaultTrackerTimeout bounds every Redis call of the tracker.
const DefaultTrackerTimeout = 50 * time.Millisecond

// RedisTracker keeps one marker per user in Redis:
// user:{id}:last_write_utc = the RFC 3339 UTC time of the last write, with a
// TTL. Any go-redis client works: single server, Sentinel or Cluster.
type RedisTracker struct {
	client  redis.UniversalClient
	ttl     time.Duration
	timeout time.Duration
}

// NewRedisTracker returns a tracker whose markers live for ttl.
func NewRedisTracker(client redis.UniversalClient, ttl time.Duration) *RedisTracker {
	return &RedisTracker{client: client, ttl: ttl, timeout: DefaultTrackerTimeout}
}

// WithTimeout changes how long each Redis call may take.
func (t *RedisTracker) WithTimeout(d time.Duration) *RedisTracker {
	t.timeout = d
	return t
}

// MarkerKey is the Redis key of the user's last-write marker.
func MarkerKey(userID string) string {
	return "user:" + userID + ":last_write_utc"
}

// RecordWrite sets the user's marker to at, in UTC, for the TTL.
func (t *RedisTracker) RecordWrite(ctx context.Context, userID string, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if err := t.client.Set(ctx, MarkerKey(userID), at.UTC().Format(time.RFC3339Nano), t.ttl).Err(); err != nil {
		return fmt.Errorf("record write in redis: %w", err)
	}
	return nil
}

// LastWrite reads the user's marker.
func (t *RedisTracker) LastWrite(ctx context.Context, userID string) (time.Time, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	v, err := t.client.Get(ctx, MarkerKey(userID)).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read last write from redis: %w", err)
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		// A marker we cannot read says nothing safe: treat it as a failure
		// so that the read goes to the primary.
		return time.Time{}, false, fmt.Errorf("marker %s holds %q, not an RFC 3339 time", MarkerKey(userID), v)
	}
	return at, true, nil
}

// TokenKey is the Redis key of the user's causal token (lsn mode).
func TokenKey(userID string) string {
	return "user:" + userID + ":last_write_lsn"
}

// raiseToken sets the key to ARGV[1] if that is greater than what it holds,
// and renews the TTL either way, atomically. Tokens are stored as 16
// uppercase hex digits, so that comparing strings compares positions (Lua
// numbers are doubles and cannot hold every 64-bit LSN).
var raiseToken = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (not cur) or ARGV[1] > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
`)

// RecordLSN raises the user's token to lsn, with the marker's TTL.
func (t *RedisTracker) RecordLSN(ctx context.Context, userID string, lsn LSN) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	err := raiseToken.Run(ctx, t.client, []string{TokenKey(userID)}, fmt.Sprintf("%016X", uint64(lsn)), t.ttl.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("record token in redis: %w", err)
	}
	return nil
}

// LastLSN reads the user's token.
func (t *RedisTracker) LastLSN(ctx context.Context, userID string) (LSN, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	v, err := t.client.Get(ctx, TokenKey(userID)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read token from redis: %w", err)
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil || len(v) != 16 {
		return 0, false, fmt.Errorf("token %s holds %q, not 16 hex digits", TokenKey(userID), v)
	}
	return LSN(n), true, nil
}
