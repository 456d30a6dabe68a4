package ryw

import (
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis holds routing state, so a dead Redis must not hold requests for
// long: its client has timeouts, honours context deadlines, and a failure
// makes the router read from the primary instead of waiting. The timeouts
// are sized for a loaded machine, where a request may wait tens of
// milliseconds for a CPU: one that fires under normal load silently gives
// up offload (and, for a write, costs the fence).
const (
	redisDialTimeout = time.Second
	redisIOTimeout   = DefaultTrackerTimeout
	redisPoolTimeout = DefaultTrackerTimeout
)

// NewRedisClient builds a client for any Redis deployment from one URL:
//
//	redis://[:password@]host:6379/0                                    a single server
//	redis://[:password@]host:26379/0?master_name=mymaster[&addr=h2:26379]  Sentinel (addresses of sentinels)
//	redis://[:password@]host:7000?addr=host2:7000[&addr=...]            Cluster (seed nodes)
//	redis://[:password@]host:7000?cluster=true                         Cluster behind one configuration endpoint
//
// rediss:// enables TLS; unix:///path/to.sock a local socket. go-redis's
// own query options (dial_timeout, pool_size, ...) are accepted as well.
func NewRedisClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL: %w", err)
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, err
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.Protocol)
		return redis.NewFailoverClient(o), nil
	case q.Has("addr") || q.Get("cluster") == "true":
		q.Del("cluster")
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.Protocol)
		// go-redis reloads the slot map on a MOVED answer, or once it is
		// this old: after a master crashes, its replica takes the slots
		// without a MOVED from the dead node, and every call to them fails
		// until the reload (60 s by default, a minute without offload).
		// Reloading is one CLUSTER SLOTS, in the background.
		o.ClusterStateReloadInterval = clusterReload
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, err
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.Protocol)
		return redis.NewClient(o), nil
	}
}

// clusterReload is how old a Redis Cluster's slot map may get.
const clusterReload = time.Second

// tune sets a client's timeouts and retries. A command is retried once on a
// network error; a dial is not retried, so that a Redis that refuses
// connections fails a request at once rather than after the whole timeout.
// Unless the URL asks for another (protocol=3), the client speaks RESP2:
// the tracker uses nothing of RESP3, and go-redis looks for RESP3 push
// notifications before reading every reply (1.2% of the API's CPU in a
// profile).
func tune(dial, read, write, pool *time.Duration, contextTimeouts *bool, retries, dialRetries, protocol *int) {
	*dial, *read, *write, *pool = redisDialTimeout, redisIOTimeout, redisIOTimeout, redisPoolTimeout
	*contextTimeouts, *retries, *dialRetries = true, 1, 1
	if *protocol == 0 {
		*protocol = 2
	}
}
