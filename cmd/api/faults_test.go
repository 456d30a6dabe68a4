package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// The fault suite, over HTTP: each test injects one fault that used to leak
// a stale own-write read (docs/CONSISTENCY.md lists them) and checks that a
// user reading after their acknowledged write sees it, in time and in lsn
// mode. The same steps with RYW_MODE=off must read the stale value: the
// control that shows the test can fail. Reads send no token back, like a
// client without cookies: the server alone must get it right. Holes 4 to 7
// are tested in package ryw, where the pool, the WAL position, the clocks
// and the marks can be reached directly.

// faultModes runs scenario in time and lsn mode, which must read fresh, and
// in off mode, which must read the stale value.
func faultModes(t *testing.T, scenario func(t *testing.T, mode string) (want string, got response)) {
	for _, mode := range []string{"time", "lsn", "off"} {
		t.Run(mode, func(t *testing.T) {
			want, got := scenario(t, mode)
			fresh := got.status == http.StatusOK && nameIn(t, got) == want
			switch {
			case mode == "off" && fresh:
				t.Errorf("control: RYW_MODE=off read %s; want the stale value from a paused replica", got)
			case mode != "off" && !fresh:
				t.Errorf("read after the fault = %s; want %q", got, want)
			case mode != "off" && strings.HasPrefix(got.servedBy, "replica"):
				// Every replica is paused behind the write: whoever
				// served the read, it was not one of them.
				t.Errorf("a paused replica served the read: %s", got)
			}
		})
	}
}

// settle writes v1 for a new user through api and waits until every replica
// has it and api reads the user from a replica again (in time mode, once
// the window has passed): the state in which the old code trusted replicas.
func settle(t *testing.T, api string) uuid.UUID {
	t.Helper()
	user := uuid.New()
	saveProfile(t, api, user, "v1")
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r := getMe(t, api, user)
		return strings.HasPrefix(r.servedBy, "replica") && nameIn(t, r) == "v1"
	})
	return user
}

// v2OnlyOnThePrimary starts an API with env, settles a user at v1 on every
// node, pauses every replica and saves v2 through the API: v2 is then on
// the primary only, and acknowledged.
func v2OnlyOnThePrimary(t *testing.T, env ...string) (api string, user uuid.UUID) {
	t.Helper()
	api, _ = startRun(t, stackEnv(t, env...))
	waitReplicasUsable(t, api)
	user = settle(t, api)
	pauseAll(t)
	saveProfile(t, api, user, "v2")
	return api, user
}

// Hole 1: a write whose marks cannot be written to Redis (its instance is
// cut off from Redis) must still be seen by the user's reads through
// another instance.
func TestFaultMarkerWriteFailsOnOneInstance(t *testing.T) {
	faultModes(t, func(t *testing.T, mode string) (string, response) {
		proxy, redisURL, err := devstack.StartProxyForURL(stack.Redis.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(proxy.Close)
		a, _ := startRun(t, stackEnv(t, "RYW_MODE="+mode, "RYW_WINDOW=1s"))
		b, _ := startRun(t, stackEnv(t, "RYW_MODE="+mode, "RYW_WINDOW=1s", "REDIS_URL="+redisURL))
		waitReplicasUsable(t, a)
		waitReplicasUsable(t, b)
		user := settle(t, a)

		pauseAll(t)
		if err := proxy.Blackhole(); err != nil {
			t.Fatal(err)
		}
		w := saveProfile(t, b, user, "v2")
		if w.reason != string(ryw.ReasonWriteFenced) {
			t.Errorf("write through the instance cut off from Redis: reason %q; want write-fenced", w.reason)
		}
		var last response
		for range 3 {
			if last = getMe(t, a, user); nameIn(t, last) != "v2" {
				break
			}
		}
		return "v2", last
	})
}

// Hole 2: Redis restarts empty (no persistence); a user whose marks it lost
// must not be read from a replica that lacks their write.
func TestFaultRedisLosesItsKeys(t *testing.T) {
	faultModes(t, func(t *testing.T, mode string) (string, response) {
		api, user := v2OnlyOnThePrimary(t, "RYW_MODE="+mode, "RYW_WINDOW=1s")
		restartRedisEmpty(t)
		return "v2", getMe(t, api, user)
	})
}

// Hole 2, failover flavour: Redis comes back as a server that kept the
// epoch but missed the user's marks, like a Redis replica promoted before
// the marks reached it.
func TestFaultRedisFailsOverToAServerThatMissedTheMarks(t *testing.T) {
	faultModes(t, func(t *testing.T, mode string) (string, response) {
		api, user := v2OnlyOnThePrimary(t, "RYW_MODE="+mode, "RYW_WINDOW=1s")
		c := redisClient(t)
		epoch := c.Get(t.Context(), ryw.EpochKey).Val()
		restartRedisEmpty(t)
		if epoch != "" {
			if err := c.Set(t.Context(), ryw.EpochKey, epoch, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		return "v2", getMe(t, api, user)
	})
}

// Hole 3: the marks expire (RYW_MARKER_TTL) while a replica is stalled
// behind the write; the client keeps no token. No replica that far behind
// may serve the user.
func TestFaultMarksExpireWhileAReplicaIsStalled(t *testing.T) {
	faultModes(t, func(t *testing.T, mode string) (string, response) {
		api, user := v2OnlyOnThePrimary(t, "RYW_MODE="+mode, "RYW_WINDOW=1s", "RYW_MARKER_TTL=2s")
		c := redisClient(t)
		waitFor(t, func() bool {
			n, err := c.Exists(t.Context(), ryw.MarkerKey(user.String()), ryw.TokenKey(user.String())).Result()
			return err == nil && n == 0
		})
		return "v2", getMe(t, api, user)
	})
}

func redisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	c, err := ryw.NewRedisClient(stack.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// restartRedisEmpty stops Redis and starts it again: devstack's Redis keeps
// nothing on disk, so it comes back empty, with a new run id.
func restartRedisEmpty(t *testing.T) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if err := stack.Redis.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
}
