package devstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/ryw"
)

// The Redis topologies (Options.Redis), on real redis-server and
// redis-sentinel processes: each starts whole, its RedisURL works with the
// application's client (ryw.NewRedisClient), its faults do what they say,
// and Close leaves nothing behind. The stacks have no PostgreSQL replica:
// only Redis is under test here.

// redisFootprint is every Redis process of the stack and its port.
func redisFootprint(s *Stack) footprint {
	f := footprint{dir: s.Dir}
	for _, r := range append(append([]*Redis{}, s.RedisNodes...), s.Sentinels...) {
		if pid := r.Pid(); pid != 0 {
			f.pids = append(f.pids, pid)
		}
		f.ports = append(f.ports, r.Port)
	}
	return f
}

// appClient is the application's client of the stack's Redis.
func appClient(t *testing.T, s *Stack) redis.UniversalClient {
	t.Helper()
	c, err := ryw.NewRedisClient(s.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls op until it succeeds (a client finds the new master
// after a failover), failing the test after 30 s.
func eventually(t *testing.T, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 30s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSentinelTopology(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	s, err := Start(ctx, Options{Redis: RedisSentinel, TempDir: parentDir(t), Log: tlog{t}})
	t.Logf("started in %s", time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	f := redisFootprint(s)
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		f.check(t)
	}()
	if len(s.RedisNodes) != 2 || len(s.Sentinels) != 3 || len(f.pids) != 5 || s.Redis != s.RedisNodes[0] {
		t.Fatalf("sentinel stack: %d data nodes, %d sentinels, %d processes, Redis %s; want 2, 3, 5, redis1",
			len(s.RedisNodes), len(s.Sentinels), len(f.pids), s.Redis.Name)
	}
	url := s.RedisURL()
	for _, want := range []string{"redis://" + s.Sentinels[0].Addr() + "/0?", "master_name=" + SentinelMaster, "addr=" + s.Sentinels[1].Addr(), "addr=" + s.Sentinels[2].Addr()} {
		if !strings.Contains(url, want) {
			t.Errorf("RedisURL() = %q; want it to hold %q", url, want)
		}
	}
	if !strings.Contains(strings.Join(s.Env(), "\n"), "REDIS_URL="+url) || s.State().Redis != url {
		t.Errorf("Env() = %q, State().Redis = %q; want REDIS_URL=%s", s.Env(), s.State().Redis, url)
	}
	if role, err := s.RedisNodes[1].Role(ctx); err != nil || role != "slave" {
		t.Errorf("redis2's role = %q, %v; want slave", role, err)
	}

	c := appClient(t, s)
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// A graceful failover keeps what the master had; the client follows.
	old := s.Redis
	start = time.Now()
	promoted, err := s.SentinelFailover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SentinelFailover took %s", time.Since(start))
	if promoted == old || s.Redis != promoted {
		t.Fatalf("SentinelFailover promoted %s (was %s), Redis is %s", promoted.Name, old.Name, s.Redis.Name)
	}
	start = time.Now()
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("the old master became a replica after %s", time.Since(start))
	if ok, err := old.replicating(ctx, promoted); !ok {
		t.Errorf("after SentinelFailover, %s does not replicate from %s (%v)", old.Name, promoted.Name, err)
	}
	eventually(t, "write after SentinelFailover", func() error { return c.Set(ctx, "k2", "after", 0).Err() })
	if v, err := c.Get(ctx, "k").Result(); v != "before" {
		t.Errorf("after SentinelFailover, k = %q, %v; want before", v, err)
	}

	// A crash: the replica is promoted, the dead master comes back as its
	// replica.
	start = time.Now()
	killed, err := s.KillRedisMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("KillRedisMaster took %s", time.Since(start))
	if killed != promoted || killed.Running() || s.Redis == killed {
		t.Fatalf("KillRedisMaster killed %s (running %v), Redis is %s; want %s killed", killed.Name, killed.Running(), s.Redis.Name, promoted.Name)
	}
	eventually(t, "write after KillRedisMaster", func() error { return c.Set(ctx, "k3", "after kill", 0).Err() })
	start = time.Now()
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart and WaitRedis took %s", time.Since(start))
	if ok, err := killed.replicating(ctx, s.Redis); !ok {
		t.Errorf("%s restarted is not a replica of %s (%v)", killed.Name, s.Redis.Name, err)
	}
	f = redisFootprint(s) // the restarted node has a new pid
}

func TestClusterTopology(t *testing.T) {
	ctx := t.Context()
	s, err := Start(ctx, Options{Redis: RedisCluster, RedisReplicas: 1, TempDir: parentDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := redisFootprint(s)
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		f.check(t)
	}()
	if len(s.RedisNodes) != 6 || len(s.Sentinels) != 0 || len(f.pids) != 6 {
		t.Fatalf("cluster stack: %d nodes, %d sentinels, %d processes; want 6, 0, 6", len(s.RedisNodes), len(s.Sentinels), len(f.pids))
	}
	url := s.RedisURL()
	if !strings.HasPrefix(url, "redis://"+s.RedisNodes[0].Addr()+"?addr=") || strings.Count(url, "addr=") != 5 {
		t.Errorf("RedisURL() = %q; want the six nodes", url)
	}
	c := appClient(t, s)
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("ryw.NewRedisClient(%q) is a %T, not a cluster client", url, c)
	}
	// Keys on every shard.
	keys := map[int]string{}
	for i := 0; len(keys) < clusterMasters; i++ {
		k := "key" + strconv.Itoa(i)
		slot := int(c.ClusterKeySlot(ctx, k).Val())
		for shard := clusterMasters - 1; shard >= 0; shard-- {
			if slot >= clusterShardStart[shard] {
				if _, ok := keys[shard]; !ok {
					keys[shard] = k
					if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
						t.Fatal(err)
					}
				}
				break
			}
		}
	}
	readAll := func(what string) {
		t.Helper()
		for shard, k := range keys {
			eventually(t, fmt.Sprintf("%s: read shard %d", what, shard), func() error {
				v, err := c.Get(ctx, k).Result()
				if err == nil && v != "v" {
					return fmt.Errorf("%s = %q, want v", k, v)
				}
				if err != nil {
					// go-redis reloads the slot map on MOVED, or once a
					// minute: not when a master it knows refuses
					// connections.
					c.(*redis.ClusterClient).ReloadState(ctx)
				}
				return err
			})
		}
	}

	res, err := s.ClusterFailover(ctx, ClusterFailoverOptions{Shard: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Old != s.RedisNodes[1] || res.Promoted != s.RedisNodes[4] || !res.Old.Running() {
		t.Errorf("manual failover of shard 1: old %s (running %v), promoted %s; want redis2 running, redis5", res.Old.Name, res.Old.Running(), res.Promoted.Name)
	}
	readAll("after CLUSTER FAILOVER")

	killed, err := s.KillRedisMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if killed != s.RedisNodes[0] || killed.Running() {
		t.Errorf("KillRedisMaster on a cluster killed %s (running %v); want redis1, the first shard's master", killed.Name, killed.Running())
	}
	readAll("after killing shard 0's master")
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := killed.replicating(ctx, s.RedisNodes[3]); !ok {
		t.Errorf("%s restarted is not a replica of redis4, which took over (%v)", killed.Name, err)
	}
	if _, err := s.ClusterFailover(ctx, ClusterFailoverOptions{Shard: 3}); err == nil {
		t.Error("ClusterFailover of shard 3 succeeded")
	}
	f = redisFootprint(s)
}

func TestClusterWithoutReplicas(t *testing.T) {
	ctx := t.Context()
	s, err := Start(ctx, Options{Redis: RedisCluster, TempDir: parentDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := redisFootprint(s)
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		f.check(t)
	}()
	if len(s.RedisNodes) != 3 {
		t.Fatalf("%d nodes; want 3 masters", len(s.RedisNodes))
	}
	c := appClient(t, s)
	for i := range 20 {
		if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClusterFailover(ctx, ClusterFailoverOptions{}); err == nil || !strings.Contains(err.Error(), "no replica") {
		t.Errorf("ClusterFailover without replicas = %v; want an error saying there is no replica", err)
	}
}

func TestRedisTopologyFaultsNeedTheirTopology(t *testing.T) {
	ctx := t.Context()
	if _, err := stack.SentinelFailover(ctx); err == nil {
		t.Error("SentinelFailover on a single Redis succeeded")
	}
	if _, err := stack.KillRedisMaster(ctx); err == nil || !strings.Contains(err.Error(), "Redis.Stop") {
		t.Errorf("KillRedisMaster on a single Redis = %v; want an error pointing at Redis.Stop", err)
	}
	if _, err := stack.ClusterFailover(ctx, ClusterFailoverOptions{}); err == nil {
		t.Error("ClusterFailover on a single Redis succeeded")
	}
	if stack.RedisTopology() != RedisSingle || stack.RedisURL() != stack.Redis.URL || len(stack.RedisNodes) != 1 {
		t.Errorf("single topology: %q, RedisURL %q, %d nodes", stack.RedisTopology(), stack.RedisURL(), len(stack.RedisNodes))
	}
	if err := stack.WaitRedis(ctx); err != nil {
		t.Error(err)
	}
}

func TestRedisOptionsAreChecked(t *testing.T) {
	parent := parentDir(t)
	for _, o := range []Options{
		{Redis: "replicated"},
		{Redis: RedisCluster, RedisReplicas: 2},
		{Redis: RedisCluster, RedisReplicas: -1},
		{Redis: RedisSentinel, RedisReplicas: 1},
		{RedisReplicas: 1},
	} {
		o.TempDir = parent
		if s, err := Start(t.Context(), o); err == nil {
			s.Close()
			t.Errorf("Start(Redis %q, RedisReplicas %d) succeeded", o.Redis, o.RedisReplicas)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("refused options left %d entries behind", len(entries))
	}
}

func TestMissingSentinelSaysWhatToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(t.Context(), Options{Redis: RedisSentinel})
	if err == nil || !strings.Contains(err.Error(), "apt-get install redis-sentinel") {
		t.Errorf("Start without redis-sentinel = %v; want an error saying apt-get install redis-sentinel", err)
	}
}

// TestFailedTopologyStartLeavesNothingBehind fails each topology's start
// half-way, once some of its processes run: Start must stop them all and
// remove the directory.
func TestFailedTopologyStartLeavesNothingBehind(t *testing.T) {
	for _, tc := range []struct {
		opts   Options
		failAt string
	}{
		{Options{Redis: RedisSentinel}, "sentinel2"},
		{Options{Redis: RedisCluster, RedisReplicas: 1}, "redis5"},
	} {
		t.Run(tc.opts.Redis, func(t *testing.T) {
			parent := parentDir(t)
			boom := errors.New("injected failure")
			var pids, ports []int
			opts := tc.opts
			opts.TempDir = parent
			opts.redisStarted = func(r *Redis) error {
				pids, ports = append(pids, r.Pid()), append(ports, r.Port)
				if r.Name == tc.failAt {
					return boom
				}
				return nil
			}
			s, err := Start(t.Context(), opts)
			if !errors.Is(err, boom) || s != nil {
				t.Fatalf("Start = %v, %v; want nil, the injected failure", s, err)
			}
			if len(pids) < 3 {
				t.Fatalf("only %d Redis processes had started", len(pids))
			}
			for i, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process %d still exists after the failed start (kill 0: %v)", pid, err)
				}
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[i]))
				if err != nil {
					t.Errorf("port %d still in use after the failed start: %v", ports[i], err)
					continue
				}
				l.Close()
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("the failed start left %d entries in its temp dir", len(entries))
			}
		})
	}
}

// tlog sends the stack's progress (Options.Log) to the test's log.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) { l.t.Logf("%s", p); return len(p), nil }
