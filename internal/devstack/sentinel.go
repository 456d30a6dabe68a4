package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels know the master by: the
// master_name of RedisURL in the Sentinel topology.
const SentinelMaster = "ryw"

// The Sentinel topology's timings: short, so that a failover takes seconds,
// yet long enough that a loaded test machine does not fail over by itself.
const (
	sentinelDownAfter       = 1500 * time.Millisecond
	sentinelFailoverTimeout = 3 * time.Second
	sentinelQuorum          = 2
	sentinelCount           = 3
)

// sentinelConf is a sentinel's configuration file. The sentinel rewrites
// it (the master it follows, the replicas and sentinels it found), so it
// lives in the sentinel's own directory, owned by the account it runs as.
const sentinelConf = `# devstack
port %d
bind 127.0.0.1
daemonize no
dir %s
logfile ""
loglevel notice
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`

// findSentinel looks for redis-sentinel on PATH.
func findSentinel() (string, error) {
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return p, nil
	}
	return "", errors.New("devstack: the Sentinel topology needs redis-sentinel, which is not on PATH; install it: " +
		"Debian/Ubuntu `sudo apt-get install redis-sentinel`, Fedora `sudo dnf install redis`, macOS `brew install redis`")
}

// startSentinel starts the Sentinel topology under base: a master
// (redis1), its replica (redis2) and three sentinels watching the master,
// with a quorum of two; it returns once the sentinels know each other and
// the replica, and the replica has synchronised.
func (s *Stack) startSentinel(ctx context.Context, bin, base string, as *account) error {
	sentinelBin, err := findSentinel()
	if err != nil {
		return err
	}
	for i := range 2 {
		r, err := s.newRedisNode(fmt.Sprintf("redis%d", i+1), bin, base, as,
			// A replica loads a full synchronisation straight from the
			// socket: nothing on disk, here either.
			"--repl-diskless-load", "swapdb", "--repl-diskless-sync-delay", "0")
		if err != nil {
			return err
		}
		if i > 0 {
			r.replicaOf = s.RedisNodes[0].Addr()
		}
	}
	s.Redis = s.RedisNodes[0]
	for _, r := range s.RedisNodes {
		if err := s.startRedisProc(ctx, r); err != nil {
			return err
		}
	}
	for i := range sentinelCount {
		name := fmt.Sprintf("sentinel%d", i+1)
		dir := filepath.Join(base, name)
		if err := mkdirFor(dir, as); err != nil {
			return err
		}
		r, err := newRedis(name, sentinelBin, dir, as)
		if err != nil {
			return err
		}
		r.conf = filepath.Join(dir, "sentinel.conf")
		conf := fmt.Sprintf(sentinelConf, r.Port, dir,
			SentinelMaster, s.Redis.Port, sentinelQuorum,
			SentinelMaster, sentinelDownAfter.Milliseconds(),
			SentinelMaster, sentinelFailoverTimeout.Milliseconds(),
			SentinelMaster)
		if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		if err := as.chown(r.conf); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		s.Sentinels = append(s.Sentinels, r)
		if err := s.startRedisProc(ctx, r); err != nil {
			return err
		}
	}
	s.logf("redis sentinel: master %s, replica %s, sentinels on ports %d, %d, %d",
		s.RedisNodes[0].Addr(), s.RedisNodes[1].Addr(), s.Sentinels[0].Port, s.Sentinels[1].Port, s.Sentinels[2].Port)
	return s.waitSentinel(ctx)
}

// newRedisNode makes a data node of Sentinel or Cluster in its own
// directory under base, with extra settings, and adds it to RedisNodes.
func (s *Stack) newRedisNode(name, bin, base string, as *account, args ...string) (*Redis, error) {
	dir := filepath.Join(base, name)
	if err := mkdirFor(dir, as); err != nil {
		return nil, err
	}
	r, err := newRedis(name, bin, dir, as)
	if err != nil {
		return nil, err
	}
	r.args = args
	s.RedisNodes = append(s.RedisNodes, r)
	return r, nil
}

// mkdirFor makes a directory the account can write to.
func mkdirFor(dir string, as *account) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if err := as.chown(dir); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}

// sentinelURL is RedisURL in the Sentinel topology: every sentinel.
func (s *Stack) sentinelURL() string {
	u := fmt.Sprintf("redis://%s/0?master_name=%s", s.Sentinels[0].Addr(), SentinelMaster)
	for _, r := range s.Sentinels[1:] {
		u += "&addr=" + r.Addr()
	}
	return u
}

func (r *Redis) sentinelClient() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, Protocol: 2})
}

// sentinelsMaster is the master every running sentinel names, if they
// agree on one; nil if they do not (yet).
func (s *Stack) sentinelsMaster(ctx context.Context) (*Redis, error) {
	var addr string
	for _, sen := range s.Sentinels {
		if !sen.Running() {
			continue
		}
		c := sen.sentinelClient()
		hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: SENTINEL GET-MASTER-ADDR-BY-NAME: %w", sen.Name, err)
		}
		if len(hp) != 2 {
			return nil, fmt.Errorf("%s: SENTINEL GET-MASTER-ADDR-BY-NAME answered %q", sen.Name, hp)
		}
		a := net.JoinHostPort(hp[0], hp[1])
		if addr != "" && a != addr {
			return nil, nil
		}
		addr = a
	}
	for _, r := range s.RedisNodes {
		if r.Addr() == addr {
			return r, nil
		}
	}
	return nil, fmt.Errorf("the sentinels name %q as the master, which is none of the stack's nodes", addr)
}

// waitSentinel waits until the Sentinel topology is whole: every running
// sentinel names the same master, which answers as one; every other running
// data node replicates from it, synchronised; and every sentinel knows the
// other sentinels and sees each running replica up. Then Redis is that
// master, and a data node started again comes back as its replica.
func (s *Stack) waitSentinel(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	var master *Redis
	err := poll(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		m, err := s.sentinelsMaster(ctx)
		if err != nil || m == nil {
			return false, err
		}
		if !m.Running() {
			return false, fmt.Errorf("the sentinels still name %s, which is down, as the master", m.Name)
		}
		if role, err := m.Role(ctx); err != nil || role != "master" {
			return false, fmt.Errorf("the sentinels name %s, which answers as %q (%v)", m.Name, role, err)
		}
		var replicas []string
		for _, r := range s.RedisNodes {
			if r == m || !r.Running() {
				continue
			}
			if ok, err := r.replicating(ctx, m); !ok {
				return false, fmt.Errorf("%s does not replicate from %s yet (%v)", r.Name, m.Name, err)
			}
			replicas = append(replicas, r.Addr())
		}
		running := 0
		for _, sen := range s.Sentinels {
			if sen.Running() {
				running++
			}
		}
		for _, sen := range s.Sentinels {
			if !sen.Running() {
				continue
			}
			if ok, err := sen.sentinelSees(ctx, m, replicas, running-1); !ok {
				return false, err
			}
		}
		master = m
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("devstack: wait for redis sentinel to settle: %w", err)
	}
	s.setRedisMaster(master)
	return nil
}

// sentinelSees reports whether the sentinel sees master up and not failing
// over, each of replicas (host:port) up, and others other sentinels.
func (sen *Redis) sentinelSees(ctx context.Context, master *Redis, replicas []string, others int) (bool, error) {
	c := sen.sentinelClient()
	defer c.Close()
	m, err := c.Master(ctx, SentinelMaster).Result()
	if err != nil {
		return false, fmt.Errorf("%s: SENTINEL MASTER: %w", sen.Name, err)
	}
	if m["port"] != strconv.Itoa(master.Port) || m["flags"] != "master" {
		return false, fmt.Errorf("%s sees the master %s:%s with flags %q", sen.Name, m["ip"], m["port"], m["flags"])
	}
	if n, _ := strconv.Atoi(m["num-other-sentinels"]); n < others {
		return false, fmt.Errorf("%s knows %d other sentinels, not %d yet", sen.Name, n, others)
	}
	rs, err := c.Replicas(ctx, SentinelMaster).Result()
	if err != nil {
		return false, fmt.Errorf("%s: SENTINEL REPLICAS: %w", sen.Name, err)
	}
	var up []string
	for _, r := range rs {
		if r["flags"] == "slave" {
			up = append(up, net.JoinHostPort(r["ip"], r["port"]))
		}
	}
	for _, want := range replicas {
		if !slices.Contains(up, want) {
			return false, fmt.Errorf("%s does not see the replica %s up yet (it sees %v)", sen.Name, want, up)
		}
	}
	return true, nil
}

// setRedisMaster makes m the stack's Redis, and the node every other data
// node comes back as a replica of when started again.
func (s *Stack) setRedisMaster(m *Redis) {
	for _, r := range s.RedisNodes {
		if r == m {
			r.setReplicaOf("")
		} else {
			r.setReplicaOf(m.Addr())
		}
	}
	s.Redis = m
}

// SentinelFailover asks a sentinel for a failover (SENTINEL FAILOVER, what
// an operator does to move the master away for maintenance) and waits until
// every sentinel names the promoted replica and it answers as the master;
// it returns the new master, which is then Redis. The old master goes on
// taking writes until the sentinels turn it into a replica of the new one,
// which Sentinel does only some 8 s later (and the writes it took meanwhile
// are lost): WaitRedis waits for that. No other use of the stack may run
// while it does this.
func (s *Stack) SentinelFailover(ctx context.Context) (promoted *Redis, err error) {
	if s.redisTopology != RedisSentinel {
		return nil, fmt.Errorf("devstack: SentinelFailover needs the Sentinel topology (Options.Redis = %q), not %q", RedisSentinel, s.redisTopology)
	}
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	old := s.Redis
	var asked bool
	for _, sen := range s.Sentinels {
		if !sen.Running() {
			continue
		}
		c := sen.sentinelClient()
		err = c.Failover(ctx, SentinelMaster).Err()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("devstack: %s: SENTINEL FAILOVER: %w", sen.Name, err)
		}
		asked = true
		break
	}
	if !asked {
		return nil, errors.New("devstack: no sentinel is running")
	}
	if promoted, err = s.waitPromoted(ctx, old); err != nil {
		return nil, err
	}
	s.setRedisMaster(promoted)
	s.logf("redis sentinel: failed over from %s to %s", old.Name, promoted.Name)
	return promoted, nil
}

// KillRedisMaster crashes the current master (SIGKILL), as a machine that
// dies would, and waits until the sentinels (the Sentinel topology) or the
// cluster (Cluster: the master of the first shard) have promoted its
// replica and it answers as the master. It returns the killed node, which
// stays down: Start brings it back, as a replica of the new master (then
// WaitRedis waits until it has synchronised). Writes the master had not
// yet sent its replica are lost, as they would be. No other use of the
// stack may run while it does this.
func (s *Stack) KillRedisMaster(ctx context.Context) (killed *Redis, err error) {
	switch s.redisTopology {
	case RedisSentinel:
	case RedisCluster:
		res, err := s.ClusterFailover(ctx, ClusterFailoverOptions{Shard: 0, Kill: true})
		return res.Old, err
	default:
		return nil, fmt.Errorf("devstack: a single Redis has no replica to promote: stop it with Redis.Stop (or start the stack with Options.Redis %q or %q)", RedisSentinel, RedisCluster)
	}
	ctx, cancel := withDefaultTimeout(ctx, 90*time.Second)
	defer cancel()
	old := s.Redis
	if err := old.Kill(ctx); err != nil {
		return nil, fmt.Errorf("devstack: kill %s: %w", old.Name, err)
	}
	promoted, err := s.waitPromoted(ctx, old)
	if err != nil {
		return old, err
	}
	s.setRedisMaster(promoted)
	s.logf("redis sentinel: killed %s; %s promoted", old.Name, promoted.Name)
	return old, nil
}

// waitPromoted waits until every running sentinel names a master other
// than old, and it answers as a master.
func (s *Stack) waitPromoted(ctx context.Context, old *Redis) (*Redis, error) {
	var promoted *Redis
	err := poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		m, err := s.sentinelsMaster(ctx)
		if err != nil || m == nil || m == old {
			return false, err
		}
		if role, err := m.Role(ctx); err != nil || role != "master" {
			return false, fmt.Errorf("the sentinels name %s, which answers as %q (%v)", m.Name, role, err)
		}
		promoted = m
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: wait for the sentinels to promote a replica of %s: %w", old.Name, err)
	}
	return promoted, nil
}
