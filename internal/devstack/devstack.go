// Package devstack runs a real local PostgreSQL primary with streaming
// replicas, and Redis, from the machine's own server binaries: no Docker,
// on free loopback ports, in a temporary directory. It backs `make run`
// (through cmd/devstack) and is the fixture of every test that claims
// read-your-writes, with helpers to make a replica deterministically stale
// (pause replay), to stop, crash and restart nodes, and to wait for catch-up.
//
// PostgreSQL refuses to run as root; when devstack runs as root it runs the
// servers as the unprivileged "postgres" (or "nobody") account.
package devstack

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for migrations

	"github.com/ryw-go/ryw/migrations"
)

// Options configure a stack. The zero value is one primary, no replicas.
type Options struct {
	// Replicas is the number of streaming replicas (replica1, replica2, ...).
	Replicas int
	// ReplicaDelay is recovery_min_apply_delay on the last replica, so that
	// lag is visible; 0 disables it.
	ReplicaDelay time.Duration
	// Database is the application database (default "ryw").
	Database string
	// Migrate applies the schema migrations once the replicas stream, and
	// waits until every replica has replayed them.
	Migrate bool
	// Log receives progress messages; nil discards them.
	Log io.Writer
	// TempDir is where the stack's directory is created (default: the
	// system's temporary directory).
	TempDir string

	// Pooler puts a PgBouncer (Debian's pgbouncer) in front of every node,
	// in this pool mode: "" (none: clients connect to the nodes directly),
	// PoolTransaction or PoolSession. Node.URL stays the node's own address;
	// Stack.ClientURL and Env give the pooler's.
	Pooler string
	// Redis is the Redis topology: "" or RedisSingle (one server),
	// RedisSentinel (a master, a replica and 3 sentinels) or RedisCluster
	// (3 masters, each with RedisReplicas replicas).
	Redis string
	// RedisReplicas is how many replicas each cluster master has (cluster
	// only; 0 or 1).
	RedisReplicas int
	// LeastPrivilege makes the application connect as AppRole, a role that
	// is not a superuser and holds only the grants docs/OPERATIONS.md lists.
	// Node.URL stays the superuser's, for the tests' own faults.
	LeastPrivilege bool

	// beforeRedis, when set, runs after the databases are up and before
	// Redis starts; its error fails Start. Tests use it to check that a
	// start-up failing half-way leaves nothing behind.
	beforeRedis func() error
	// redisStarted, when set, runs after each Redis process (data node or
	// sentinel) has started; its error fails Start. Tests use it to fail a
	// topology's start half-way.
	redisStarted func(*Redis) error
}

// Pool modes of Options.Pooler.
const (
	PoolTransaction = "transaction"
	PoolSession     = "session"
)

// Redis topologies of Options.Redis.
const (
	RedisSingle   = "single"
	RedisSentinel = "sentinel"
	RedisCluster  = "cluster"
)

// AppRole is the application's role with Options.LeastPrivilege.
const AppRole = "ryw_app"

// Stack is a running primary, its replicas and Redis.
type Stack struct {
	Dir      string // the temporary directory holding everything
	Primary  *Node
	Replicas []*Node
	// Redis is the Redis server (single), the current master as the stack
	// last saw it (Sentinel: SentinelFailover, KillRedisMaster and WaitRedis
	// update it), or the first node, a master at start (Cluster). The
	// application's URL is RedisURL.
	Redis *Redis
	// RedisNodes are every redis-server: Redis alone (single); the master
	// and the replica at start (Sentinel); the masters, then their
	// replicas (Cluster).
	RedisNodes []*Redis
	// Sentinels are the redis-sentinel processes (Sentinel only).
	Sentinels []*Redis

	log           io.Writer
	redisTopology string             // RedisSingle, RedisSentinel or RedisCluster
	redisStarted  func(*Redis) error // Options.redisStarted

	mu      sync.Mutex
	apis    []*API
	issuer  *Issuer
	labURL  string
	db      string                        // the application database
	appUser string                        // the application's role when not the superuser (Options.LeastPrivilege)
	retired []*Node                       // old primaries and diverged replicas, after Failover
	closers []func(context.Context) error // servers of the stack's own (issuer, lab)
	closed  bool
}

// Start brings up the stack: initdb the primary, clone each replica with
// pg_basebackup (one replication slot each), start Redis, and wait until
// every replica streams. If anything fails half-way, everything already
// started is stopped and the directory removed.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("devstack: replicas must be >= 0, got %d", opts.Replicas)
	}
	if opts.ReplicaDelay < 0 {
		return nil, fmt.Errorf("devstack: replica delay must be >= 0, got %s", opts.ReplicaDelay)
	}
	if opts.Database == "" {
		opts.Database = "ryw"
	}
	if opts.LeastPrivilege && !opts.Migrate {
		// The role is granted the schema's tables, which the superuser
		// creates: the application's role may not.
		return nil, fmt.Errorf("devstack: LeastPrivilege needs Migrate: the application's role is granted the migrated tables")
	}
	switch opts.Pooler {
	case "", PoolTransaction, PoolSession:
	default:
		return nil, fmt.Errorf("devstack: pooler must be %q or %q (or empty: none), got %q", PoolTransaction, PoolSession, opts.Pooler)
	}
	if err := checkRedisOptions(opts); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	as, err := unprivileged()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.TempDir, "ryw-devstack-")
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	s := &Stack{Dir: dir, log: opts.Log, db: opts.Database}
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	if err := as.chown(dir); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	if as != nil {
		s.logf("running PostgreSQL as user %q (it refuses to run as root)", as.name)
	}

	newNode := func(name string, replica bool) (*Node, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		return &Node{
			Name: name, Port: port, DataDir: filepath.Join(dir, name),
			URL:     fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, opts.Database),
			replica: replica, bins: bins, as: as, home: dir, logPath: filepath.Join(dir, name+".log"),
		}, nil
	}

	if s.Primary, err = newNode("primary", false); err != nil {
		return nil, err
	}
	s.logf("initdb primary (%s)", bins.pgBin)
	if err := s.Primary.initPrimary(ctx); err != nil {
		return nil, err
	}
	if err := s.Primary.Start(ctx); err != nil {
		return nil, err
	}
	// Node.Exec connects to the application database, which does not exist
	// yet: create it from the maintenance database.
	if err := execOn(ctx, s.Primary.url("postgres"), "CREATE DATABASE "+quoteIdent(opts.Database)); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}

	for i := range opts.Replicas {
		r, err := newNode(fmt.Sprintf("replica%d", i+1), true)
		if err != nil {
			return nil, err
		}
		if i == opts.Replicas-1 {
			r.ApplyDelay = opts.ReplicaDelay
		}
		s.Replicas = append(s.Replicas, r)
		s.logf("pg_basebackup %s", r.Name)
		if err := r.cloneFrom(ctx, s.Primary); err != nil {
			return nil, err
		}
		if err := r.Start(ctx); err != nil {
			return nil, err
		}
	}

	if opts.Pooler != "" {
		if err := s.startPoolers(ctx, opts.Pooler); err != nil {
			return nil, err
		}
	}

	if opts.beforeRedis != nil {
		if err := opts.beforeRedis(); err != nil {
			return nil, err
		}
	}
	if err := s.startRedis(ctx, opts, bins.redis, as); err != nil {
		return nil, err
	}

	if err := s.WaitStreaming(ctx); err != nil {
		return nil, err
	}
	if opts.Migrate {
		if err := s.migrate(ctx); err != nil {
			return nil, err
		}
	}
	if opts.LeastPrivilege {
		if err := s.createAppRole(ctx); err != nil {
			return nil, err
		}
	}
	if opts.Pooler == PoolSession {
		if err := s.warmPoolers(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "devstack: "+format+"\n", args...)
}

// migrate applies the schema on the primary and waits until every replica
// has replayed it, so tests start from the same data everywhere.
func (s *Stack) migrate(ctx context.Context) error {
	db, err := sql.Open("pgx", s.Primary.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := migrations.Up(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	s.logf("applied %d migrations", n)
	return s.WaitCaughtUp(ctx, s.Replicas...)
}

// WaitStreaming waits until the primary's pg_stat_replication shows every
// running replica streaming.
func (s *Stack) WaitStreaming(ctx context.Context) error {
	var want []string
	for _, r := range s.Replicas {
		if r.Running() {
			want = append(want, r.Name)
		}
	}
	if len(want) == 0 {
		return nil
	}
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	err := poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		var n int
		err := s.Primary.QueryRow(ctx, []any{&n},
			"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)", want)
		if err != nil {
			return false, err
		}
		return n == len(want), nil
	})
	if err != nil {
		return fmt.Errorf("devstack: wait for %s to stream: %w", strings.Join(want, ", "), err)
	}
	return nil
}

// WaitCaughtUp waits until each given replica has replayed everything the
// primary had written when it was called. It polls LSNs; it never sleeps
// for a guessed time. Note that a delayed replica takes its delay.
func (s *Stack) WaitCaughtUp(ctx context.Context, replicas ...*Node) error {
	target, err := s.Primary.CurrentLSN(ctx)
	if err != nil {
		return err
	}
	for _, r := range replicas {
		if err := r.WaitReplayed(ctx, target); err != nil {
			return err
		}
	}
	return nil
}

// Replica returns the replica with the given name, or nil.
func (s *Stack) Replica(name string) *Node {
	for _, r := range s.Replicas {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// ReplicaURLs is the DATABASE_REPLICA_URLS value for the stack: name=url
// items, comma-separated, each the URL the application uses (ClientURL).
func (s *Stack) ReplicaURLs() string {
	items := make([]string, len(s.Replicas))
	for i, r := range s.Replicas {
		items[i] = r.Name + "=" + s.ClientURL(r)
	}
	return strings.Join(items, ",")
}

// Env is the API's connection environment for this stack. Behind a pooler,
// or as AppRole, the migrations run as the owner, straight to the primary
// (OwnerURL).
func (s *Stack) Env() []string {
	env := []string{
		"DATABASE_URL=" + s.ClientURL(s.Primary),
		"DATABASE_REPLICA_URLS=" + s.ReplicaURLs(),
		"DATABASE_POOLER=" + s.PoolerEnv(),
		"REDIS_URL=" + s.RedisURL(),
	}
	if s.Primary.pooler != nil || s.appUser != "" {
		env = append(env, "DATABASE_MIGRATION_URL="+s.OwnerURL())
	}
	return env
}

// State is the -state file: how other tools find the running stack.
type State struct {
	Primary  string         `json:"primary"`
	Replicas []ReplicaState `json:"replicas"`
	Redis    string         `json:"redis"`
	API      []string       `json:"api"`
	// Issuer is the development token issuer's URL, when there is one.
	Issuer string `json:"issuer,omitempty"`
	// Lab is the lab's URL (LabHandler), when there is one.
	Lab string `json:"lab,omitempty"`
}

// ReplicaState names one replica in the state file.
type ReplicaState struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// State describes the running stack.
func (s *Stack) State() State {
	st := State{Primary: s.Primary.URL, Redis: s.RedisURL(), Replicas: []ReplicaState{}, API: []string{}}
	for _, r := range s.Replicas {
		st.Replicas = append(st.Replicas, ReplicaState{Name: r.Name, URL: r.URL})
	}
	s.mu.Lock()
	for _, a := range s.apis {
		st.API = append(st.API, a.URL)
	}
	if s.issuer != nil {
		st.Issuer = s.issuer.URL
	}
	st.Lab = s.labURL
	s.mu.Unlock()
	return st
}

// WriteState writes the state as JSON to path, atomically.
func (s *Stack) WriteState(path string) error {
	b, err := json.MarshalIndent(s.State(), "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Close stops every process the stack started, API first, then replicas,
// the primary and Redis, and removes the directory. It is safe to call
// more than once.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	apis, closers, retired := s.apis, s.closers, s.retired
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	for _, a := range apis {
		errs = append(errs, a.Stop(ctx))
	}
	for _, c := range closers {
		errs = append(errs, c(ctx))
	}
	for _, n := range append(append([]*Node{s.Primary}, s.Replicas...), retired...) {
		if n != nil && n.pooler != nil {
			errs = append(errs, n.pooler.Stop(ctx))
		}
	}
	for _, r := range s.Replicas {
		errs = append(errs, r.Stop(ctx))
	}
	for _, r := range retired {
		// Old primaries are stopped already; diverged replicas are not.
		if r.Running() {
			errs = append(errs, r.Stop(ctx))
		}
	}
	if s.Primary != nil {
		errs = append(errs, s.Primary.Stop(ctx))
	}
	// The sentinels first, so that they do not fail the master over while
	// the data nodes stop.
	for _, r := range append(slices.Clone(s.Sentinels), s.RedisNodes...) {
		errs = append(errs, r.Stop(ctx))
	}
	if s.Dir != "" {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func execOn(ctx context.Context, url, sql string) error {
	n := &Node{Name: "primary", URL: url}
	return n.Exec(ctx, sql)
}
