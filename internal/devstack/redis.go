package devstack

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is one Redis process of the stack: the redis-server of the single
// topology, a data node of the Sentinel or Cluster topology, or a
// redis-sentinel. It keeps nothing on disk: a restart starts empty, like
// losing the cache in production.
type Redis struct {
	// Name is "redis" (single), "redis1", "redis2", ... (the data nodes of
	// Sentinel and Cluster) or "sentinel1", "sentinel2", "sentinel3".
	Name string
	Port int
	URL  string // redis://127.0.0.1:<port>/0: this process alone

	bin     string
	dir     string
	as      *account
	logPath string
	conf    string   // a sentinel's configuration file, which it rewrites
	args    []string // settings after the common ones (cluster mode, ...)

	mu   sync.Mutex
	proc *proc
	// replicaOf is the address (host:port) of the master this data node
	// starts as a replica of; "" starts it as a master. In the Sentinel
	// topology the stack keeps it pointing at the current master, so that a
	// node killed in a failover comes back as a replica.
	replicaOf string
}

// Addr is the process's host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// Pid is the process id, or 0 when it is not running.
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.pid()
}

func (r *Redis) argv() []string {
	if r.conf != "" {
		return []string{r.bin, r.conf}
	}
	argv := []string{r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--daemonize", "no", "--loglevel", "warning"}
	argv = append(argv, r.args...)
	if host, port, err := net.SplitHostPort(r.replicaOf); err == nil {
		argv = append(argv, "--replicaof", host, port)
	}
	return argv
}

// Start starts the process and waits until it answers PING.
func (r *Redis) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc.alive() {
		return fmt.Errorf("%s is already running", r.Name)
	}
	p, err := startProc(procSpec{
		name: r.Name, argv: r.argv(),
		dir: r.dir, env: childEnv(r.dir), as: r.as, logPath: r.logPath, deathSignal: syscall.SIGTERM,
	})
	if err != nil {
		return err
	}
	r.proc = p
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	err = poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return true, fmt.Errorf("%s exited during start-up: %v\n%s", filepath.Base(r.bin), p.err, p.logTail(15))
		}
		if err := r.ping(ctx); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start %s: %w", r.Name, err)
	}
	return nil
}

// Stop shuts the process down and waits until it has exited: clients then
// get connection errors, as when Redis fails in production.
func (r *Redis) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.halt(ctx, syscall.SIGTERM, 10*time.Second)
}

// Kill crashes the process (SIGKILL) and waits until it has exited: what
// it had not yet sent its replicas is lost.
func (r *Redis) Kill(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.halt(ctx, syscall.SIGKILL, 10*time.Second)
}

// Running reports whether the process is alive.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.alive()
}

func (r *Redis) setReplicaOf(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replicaOf = addr
}

// client is a client of this process alone; the caller closes it.
func (r *Redis) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, Protocol: 2})
}

func (r *Redis) ping(ctx context.Context) error {
	c := r.client()
	defer c.Close()
	return c.Ping(ctx).Err()
}

// Role is what ROLE answers: "master", "slave" or "sentinel".
func (r *Redis) Role(ctx context.Context) (string, error) {
	c := r.client()
	defer c.Close()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", fmt.Errorf("%s: ROLE: %w", r.Name, err)
	}
	if len(v) == 0 {
		return "", fmt.Errorf("%s: ROLE answered nothing", r.Name)
	}
	role, _ := v[0].(string)
	return role, nil
}

// info reads INFO sections of the process into one map.
func (r *Redis) info(ctx context.Context, sections ...string) (map[string]string, error) {
	c := r.client()
	defer c.Close()
	text, err := c.Info(ctx, sections...).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: INFO: %w", r.Name, err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// replicating reports whether the process is a replica of master whose
// link to it is up (it has synchronised).
func (r *Redis) replicating(ctx context.Context, master *Redis) (bool, error) {
	f, err := r.info(ctx, "replication")
	if err != nil {
		return false, err
	}
	return f["role"] == "slave" && f["master_port"] == strconv.Itoa(master.Port) && f["master_link_status"] == "up", nil
}

// newRedis makes (without starting) a process of the stack named name,
// logging to <dir>/<name>.log.
func newRedis(name, bin, dir string, as *account) (*Redis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &Redis{
		Name: name, Port: port, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port),
		bin: bin, dir: dir, as: as, logPath: filepath.Join(dir, name+".log"),
	}, nil
}

// checkRedisOptions validates the Redis topology of opts, and finds the
// programs it needs before anything starts.
func checkRedisOptions(opts Options) error {
	switch opts.Redis {
	case "", RedisSingle, RedisSentinel, RedisCluster:
	default:
		return fmt.Errorf("devstack: Redis must be %q, %q or %q (or empty: single), got %q", RedisSingle, RedisSentinel, RedisCluster, opts.Redis)
	}
	switch {
	case opts.RedisReplicas < 0 || opts.RedisReplicas > 1:
		return fmt.Errorf("devstack: RedisReplicas must be 0 or 1, got %d", opts.RedisReplicas)
	case opts.RedisReplicas > 0 && opts.Redis != RedisCluster:
		return fmt.Errorf("devstack: RedisReplicas is for the %q topology (Sentinel always has one replica), not %q", RedisCluster, opts.Redis)
	}
	if opts.Redis == RedisSentinel {
		if _, err := findSentinel(); err != nil {
			return err
		}
	}
	return nil
}

// startRedis starts the Redis topology opts asks for, under <Dir>/redis.
func (s *Stack) startRedis(ctx context.Context, opts Options, bin string, as *account) error {
	s.redisTopology, s.redisStarted = opts.Redis, opts.redisStarted
	if s.redisTopology == "" {
		s.redisTopology = RedisSingle
	}
	base := filepath.Join(s.Dir, "redis")
	if err := mkdirFor(base, as); err != nil {
		return err
	}
	switch s.redisTopology {
	case RedisSentinel:
		return s.startSentinel(ctx, bin, base, as)
	case RedisCluster:
		return s.startCluster(ctx, bin, base, as, opts.RedisReplicas)
	}
	r, err := newRedis("redis", bin, base, as)
	if err != nil {
		return err
	}
	s.Redis, s.RedisNodes = r, []*Redis{r}
	return s.startRedisProc(ctx, r)
}

// startRedisProc starts one Redis process during Start.
func (s *Stack) startRedisProc(ctx context.Context, r *Redis) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	if s.redisStarted != nil {
		return s.redisStarted(r)
	}
	return nil
}

// RedisTopology is the stack's Redis topology: RedisSingle, RedisSentinel
// or RedisCluster.
func (s *Stack) RedisTopology() string { return s.redisTopology }

// RedisURL is the REDIS_URL the application uses (ryw.NewRedisClient
// reads it): the server's (single); every sentinel's, with master_name
// SentinelMaster (Sentinel); or every node's, as seeds (Cluster).
func (s *Stack) RedisURL() string {
	switch s.redisTopology {
	case RedisSentinel:
		return s.sentinelURL()
	case RedisCluster:
		return s.clusterURL()
	}
	return s.Redis.URL
}

// WaitRedis waits until the stack's Redis is whole: the server answers
// (single); the sentinels agree on a master and each running replica has
// synchronised with it (Sentinel); every running node says cluster_state:ok
// and each running replica has synchronised (Cluster). Tests call it after
// starting a killed node again.
func (s *Stack) WaitRedis(ctx context.Context) error {
	switch s.redisTopology {
	case RedisSentinel:
		return s.waitSentinel(ctx)
	case RedisCluster:
		return s.waitCluster(ctx)
	}
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	return poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		return s.Redis.ping(ctx) == nil, nil
	})
}
