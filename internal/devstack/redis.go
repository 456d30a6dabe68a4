package devstack

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the stack's redis-server. It keeps nothing on disk: a restart
// starts empty, like losing the cache in production.
type Redis struct {
	Port int
	URL  string // redis://127.0.0.1:<port>/0

	bin     string
	dir     string
	as      *account
	logPath string

	mu   sync.Mutex
	proc *proc
}

// Pid is redis-server's process id, or 0 when it is not running.
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.pid()
}

// Start starts redis-server and waits until it answers PING.
func (r *Redis) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		return fmt.Errorf("redis is already running")
	}
	p, err := startProc(procSpec{
		name: "redis",
		argv: []string{r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", r.dir, "--daemonize", "no", "--loglevel", "warning"},
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
			return true, fmt.Errorf("redis-server exited during start-up: %v\n%s", p.err, p.logTail(15))
		}
		if err := r.ping(ctx); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start redis: %w", err)
	}
	return nil
}

// Stop shuts redis-server down and waits until it has exited: clients then
// get connection errors, as when Redis fails in production.
func (r *Redis) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.halt(ctx, syscall.SIGTERM, 10*time.Second)
}

// Running reports whether redis-server is alive.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil && !r.proc.exited()
}

func (r *Redis) ping(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.Port), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return c.Ping(ctx).Err()
}

func newRedis(bin, dir string, as *account) (*Redis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &Redis{
		Port: port, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port),
		bin: bin, dir: dir, as: as, logPath: filepath.Join(dir, "redis.log"),
	}, nil
}
