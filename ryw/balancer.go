package ryw

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
)

// Config is everything a Balancer needs, each setting given once. Only
// Primary is required; every other field has a default that suits most
// services.
type Config struct {
	// Primary is the primary's URL (postgres://...). It may list several
	// hosts with target_session_attrs=read-write, to follow a failover.
	Primary string
	// Replicas are the streaming replicas that may serve reads.
	Replicas []Replica
	// Redis is where each user's last write is recorded, shared by every
	// instance of the service (default redis://127.0.0.1:6379/0). See
	// NewRedisClient for Sentinel and Cluster URLs.
	Redis string
	// Mode is how reads that must show the caller's own writes are routed
	// (default ModeTime).
	Mode Mode
	// Window is, in ModeTime, how long after a write the user's reads go to
	// the primary (default 5s).
	Window time.Duration
	// MarkerTTL is how long a user's write is remembered in Redis (default
	// 10m). No replica further behind than that serves a read that must
	// show the caller's writes.
	MarkerTTL time.Duration
	// MaxWait is how long, in ModeLSN, a read may wait for a replica to
	// replay the user's last write before it goes to the primary (default
	// 0: it does not wait).
	MaxWait time.Duration
	// UnknownWritesOnReplicas, in ModeLSN, keeps reads whose user's writes
	// are unknown (Redis down, or its marks possibly lost) off the primary:
	// each goes to a replica that has replayed the primary's position as
	// asked after the read arrived. By default they go to the primary, as
	// in ModeTime. It protects a primary that could not take every such
	// read through a Redis outage; it costs each read a round trip to the
	// primary (shared by the reads that arrive together) and a wait for the
	// replica to replay it.
	UnknownWritesOnReplicas bool
	// NoMonotonicReads turns off the session floor: by default a client
	// that sends its token back never sees its reads go back in time.
	NoMonotonicReads bool
	// NoMarkCache turns off the tracker's cache of users' marks (see
	// TrackerConfig.CacheUsers): every own read then asks Redis. Turn it
	// off while instances of a build that does not publish its writes
	// (before the cache) still run beside this one.
	NoMarkCache bool
	// CacheLease lets the mark cache answer own reads without a barrier
	// for up to this long after a shared one came back, and makes every
	// write wait until each instance's cache has acknowledged it, or that
	// cache's lease has ended (see TrackerConfig.CacheLease; default
	// DefaultCacheLease; negative: no lease). Turn it off while instances
	// of a build before the lease still run beside this one: they do not
	// wait for the caches.
	CacheLease time.Duration
	// StaleReadsWithoutPrimary lets replicas serve stale-ok reads while the
	// primary does not answer: availability, at the risk of showing writes
	// that a failover then loses.
	StaleReadsWithoutPrimary bool
	// TokenKey signs the tokens handed to clients: 32 bytes or more, the
	// same on every instance. Empty: a random key for this process (tokens
	// of other instances are then ignored; Redis still keeps every user's
	// writes).
	TokenKey []byte
	// PrimaryTimeout bounds connecting to the primary and each statement a
	// request runs there (default 5s).
	PrimaryTimeout time.Duration
	// ReplicaTimeout bounds connecting to a replica and each read on it
	// (default 1s): a read that overruns is retried on the primary.
	ReplicaTimeout time.Duration
	// PollInterval is how often the primary's and the replicas' WAL
	// positions are read (default 50ms, at most a fifth of FenceLease).
	PollInterval time.Duration
	// FenceLease is how long an instance trusts the fence it last read
	// (default 300ms); every instance must use the same. A write whose
	// marks could not be recorded raises the fence and is answered once
	// every instance has acknowledged it, or at the latest once the lease
	// (plus a tenth) has passed.
	FenceLease time.Duration
	// NoFenceAcks makes such a write wait out the whole lease (or until
	// every replica has replayed it), rather than only until every
	// instance has acknowledged the fence in ryw_fence_ack. Set it while
	// instances of a version before the acknowledgements still run on the
	// same primary (a rolling upgrade): they do not acknowledge, and would
	// not be waited for.
	NoFenceAcks bool
	// MaxConns bounds each node's connection pool (default 20).
	MaxConns int
	// Pooler says whether a connection pooler, such as PgBouncer in
	// transaction or session mode, sits in front of the nodes (default
	// PoolerDetect: every new connection tells). Behind one, statements are
	// sent unnamed, no statement_timeout is set at connection start-up (set
	// it on the role instead), and a replica read checks the replica's
	// position in its own transaction. PoolerNone makes a pooler found a
	// start-up error.
	Pooler Pooler
	// CreateSchema creates the fence table (Schema) on the primary if it is
	// missing. Without it, New refuses to start until the table exists:
	// apply Schema (or schema.sql) with your migrations.
	CreateSchema bool
	// GORM configures the *gorm.DB that Balancer.GORM returns (nil: GORM's
	// defaults).
	GORM *gorm.Config
	// Logger receives what the balancer has to say (nil: nothing).
	Logger *slog.Logger
	// ObserveRedis, when set, is told of every Redis round trip ("lookup"
	// or "record"), how long it took and its error: a hook for metrics.
	ObserveRedis func(op string, took time.Duration, err error)
}

// Replica is one streaming replica: a name, for decisions, headers and
// logs, and its URL.
type Replica struct {
	Name string // default replica1, replica2, ... in order
	URL  string
}

// Defaults of Config.
const (
	DefaultRedisURL     = "redis://127.0.0.1:6379/0"
	DefaultWindow       = 5 * time.Second
	DefaultPollInterval = 50 * time.Millisecond
	DefaultMaxConns     = 20
	// MinTokenKeyLen is the shortest Config.TokenKey: 256 bits.
	MinTokenKeyLen = 32
)

var replicaName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)

// withDefaults fills in the defaults and checks every rule that keeps the
// guarantee, returning every problem found at once.
func (c Config) withDefaults() (Config, error) {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.Redis == "" {
		c.Redis = DefaultRedisURL
	}
	if c.Mode == "" {
		c.Mode = ModeTime
	}
	switch c.Mode {
	case ModeTime, ModeLSN, ModeOff:
	default:
		fail("Mode must be %q, %q or %q, got %q", ModeTime, ModeLSN, ModeOff, c.Mode)
	}
	setDefault(&c.Window, DefaultWindow)
	setDefault(&c.MarkerTTL, DefaultMarkerTTL)
	setDefault(&c.PrimaryTimeout, DefaultPrimaryTimeout)
	setDefault(&c.ReplicaTimeout, DefaultReplicaTimeout)
	setDefault(&c.PollInterval, DefaultPollInterval)
	setDefault(&c.FenceLease, DefaultFenceLease)
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Window", c.Window}, {"MarkerTTL", c.MarkerTTL}, {"PrimaryTimeout", c.PrimaryTimeout}, {"ReplicaTimeout", c.ReplicaTimeout}, {"PollInterval", c.PollInterval}, {"FenceLease", c.FenceLease}} {
		if d.v < 0 {
			fail("%s must be positive, got %s", d.name, d.v)
		}
	}
	if c.UnknownWritesOnReplicas && c.Mode != ModeLSN {
		fail("UnknownWritesOnReplicas needs ModeLSN, got mode %q", c.Mode)
	}
	if c.MaxWait < 0 {
		fail("MaxWait must be 0 or more, got %s", c.MaxWait)
	}
	if c.CacheLease > MaxCacheLease {
		fail("CacheLease must be at most %s (a write may wait it out), got %s", MaxCacheLease, c.CacheLease)
	}
	if c.MaxConns < 1 {
		fail("MaxConns must be at least 1, got %d", c.MaxConns)
	}
	switch c.Pooler {
	case PoolerDetect, PoolerNone, PoolerPresent:
	default:
		fail("Pooler must be %q, %q or %q (detect), got %q", PoolerNone, PoolerPresent, PoolerDetect, c.Pooler)
	}
	if c.MarkerTTL < c.Window {
		fail("MarkerTTL (%s) must be at least Window (%s), or marks expire inside the window", c.MarkerTTL, c.Window)
	}
	// Several polls of the primary fit in the lease, so that one late poll
	// does not send every own-write read to the primary.
	if c.PollInterval > c.FenceLease/5 {
		fail("PollInterval must be at most a fifth of FenceLease (%s), got %s", c.FenceLease/5, c.PollInterval)
	}
	if n := len(c.TokenKey); n > 0 && n < MinTokenKeyLen {
		fail("TokenKey must be at least %d bytes (a random secret, the same on every instance), got %d", MinTokenKeyLen, n)
	}
	if c.Primary == "" {
		fail("Primary is required: the primary's URL, like postgres://app@db:5432/app")
	} else if err := checkPostgresURL(c.Primary); err != nil {
		fail("Primary: %v", err)
	}
	seen := map[string]bool{Primary: true}
	for i := range c.Replicas {
		r := &c.Replicas[i]
		if r.Name == "" {
			r.Name = fmt.Sprintf("replica%d", i+1)
		}
		switch {
		case !replicaName.MatchString(r.Name):
			fail("replica name %q must be a letter followed by up to 62 letters, digits, - or _", r.Name)
		case seen[r.Name]:
			fail("replica name %q is used twice (or is %q, the primary's)", r.Name, Primary)
		}
		seen[r.Name] = true
		if err := checkPostgresURL(r.URL); err != nil {
			fail("replica %s: %v", r.Name, err)
		}
	}
	if _, err := url.Parse(c.Redis); err != nil {
		fail("Redis must be a URL, like redis://localhost:6379/0: %v", err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("ryw: invalid configuration: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

func checkPostgresURL(raw string) error {
	if _, err := pgx.ParseConfig(raw); err != nil {
		return fmt.Errorf("not a PostgreSQL URL: %w", err)
	}
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" && u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("must be a postgres:// URL, got %s://", u.Scheme)
	}
	return nil
}

// Balancer is read-your-writes for one service: it owns the connection
// pools to the primary and the replicas, the Redis client that records
// each user's writes, the monitor that follows the replicas' positions,
// and the router that decides, per request, which node may serve a read.
// Build one with New at start-up and Close it at shutdown; in between,
// hand out GORM (or SQL) and wrap the HTTP handler with Middleware.
type Balancer struct {
	cfg      Config
	primary  *sql.DB
	replicas []NodeDB
	monPools []*sql.DB
	redis    redis.UniversalClient
	tracker  *RedisTracker
	monitor  *Monitor
	router   *Router
	signer   *TokenSigner
	// cookieTail is the token cookie's attributes, plain and secure (see
	// cookieAttrs).
	cookieTail [2]atomic.Pointer[string]
	gorm       *gorm.DB
	sql        *DB

	stop context.CancelFunc
	wg   sync.WaitGroup
	once sync.Once
}

// New validates cfg, opens the pools and the Redis client, reads every
// node's position once, and starts following them in the background until
// Close. Nodes that are down at start-up are not an error: pools connect
// lazily, and a replica joins the rotation once it answers. A fence table
// that is missing is one (see Config.CreateSchema), when the primary can
// tell.
func New(ctx context.Context, cfg Config) (_ *Balancer, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	b := &Balancer{cfg: cfg}
	defer func() {
		if err != nil {
			b.closePools()
		}
	}()
	open := func(url, name string, replica bool, conns int) (*sql.DB, error) {
		o := PoolOptions{Name: name, MaxOpen: conns, MaxIdle: conns, MaxLifetime: 30 * time.Minute, MaxIdleTime: 5 * time.Minute, Pooler: cfg.Pooler}
		o.ConnectTimeout = cfg.PrimaryTimeout
		if replica {
			o.ConnectTimeout, o.StatementTimeout = cfg.ReplicaTimeout, cfg.ReplicaTimeout
		}
		return OpenPool(url, replica, o)
	}
	if b.primary, err = open(cfg.Primary, "", false, cfg.MaxConns); err != nil {
		return nil, fmt.Errorf("ryw: primary: %w", err)
	}
	monPrimary, err := open(cfg.Primary, "", false, 1)
	if err != nil {
		return nil, fmt.Errorf("ryw: primary: %w", err)
	}
	b.monPools = append(b.monPools, monPrimary)
	var monReplicas []NodeDB
	for _, r := range cfg.Replicas {
		db, err := open(r.URL, r.Name, true, cfg.MaxConns)
		if err != nil {
			return nil, fmt.Errorf("ryw: %s: %w", r.Name, err)
		}
		b.replicas = append(b.replicas, NodeDB{Name: r.Name, DB: db})
		// The monitor's own small pools: a busy application pool never
		// delays a health check.
		mon, err := open(r.URL, "", false, 1)
		if err != nil {
			return nil, fmt.Errorf("ryw: %s: %w", r.Name, err)
		}
		b.monPools = append(b.monPools, mon)
		monReplicas = append(monReplicas, NodeDB{Name: r.Name, DB: mon})
	}
	if err := b.checkNodes(ctx); err != nil {
		return nil, err
	}
	if err := b.checkSchema(ctx); err != nil {
		return nil, err
	}
	if b.redis, err = NewRedisClient(cfg.Redis); err != nil {
		return nil, fmt.Errorf("ryw: redis: %w", err)
	}
	wal := PrimaryWAL{DB: b.primary}
	// The tracker checks every new Redis connection's server, so it is
	// built before anything connects.
	cacheUsers := 0 // the default
	if cfg.NoMarkCache {
		cacheUsers = -1
	}
	b.tracker = NewRedisTracker(b.redis, TrackerConfig{TTL: cfg.MarkerTTL, WAL: wal, Logger: cfg.Logger, Observe: cfg.ObserveRedis, CacheUsers: cacheUsers, CacheLease: cfg.CacheLease})
	b.monitor = NewMonitor(monPrimary, monReplicas, cfg.PollInterval, cfg.Logger)
	b.monitor.warmReadPools(b.replicas)
	b.router = NewRouter(RouterConfig{
		Mode: cfg.Mode, Window: cfg.Window, MarkerTTL: cfg.MarkerTTL, MaxWait: cfg.MaxWait, CheckedReplicas: true, UnknownWritesOnReplicas: cfg.UnknownWritesOnReplicas,
		Monotonic: !cfg.NoMonotonicReads, StaleReadsWithoutPrimary: cfg.StaleReadsWithoutPrimary,
		FenceLease: cfg.FenceLease, NoFenceAcks: cfg.NoFenceAcks, ReplicaTimeout: cfg.ReplicaTimeout, PrimaryTimeout: cfg.PrimaryTimeout,
		Tracker: b.tracker, View: b.monitor, WAL: wal, Logger: cfg.Logger,
	})
	if b.gorm, err = openGORM(b.primary, b.replicas, cfg.GORM, b.router); err != nil {
		return nil, fmt.Errorf("ryw: %w", err)
	}
	b.sql = &DB{b: b}
	key := cfg.TokenKey
	if len(key) == 0 {
		key = make([]byte, MinTokenKeyLen)
		_, _ = rand.Read(key)
		cfg.Logger.Warn("ryw: no token key: this process signs tokens with a random key, so tokens from other instances are ignored (read-your-writes still holds through Redis); give every instance the same key")
	}
	b.signer = NewTokenSigner(key)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	if err := b.redis.Ping(pctx).Err(); err != nil {
		cfg.Logger.Warn("ryw: redis unavailable at start-up; it is retried on use", "err", err)
	} else if err := b.tracker.checkPermissions(pctx); err != nil {
		cancel()
		return nil, fmt.Errorf("ryw: redis: %w", err)
	}
	cancel()

	// Open the pools' connections before the replicas join the rotation
	// at the first poll, so that the first requests find them open.
	b.warm(ctx)
	// Know the replicas before the first request.
	b.monitor.Poll(ctx)
	for _, st := range b.monitor.Status() {
		if !st.Healthy {
			cfg.Logger.Warn("ryw: replica unavailable at start-up; it is retried on use", "replica", st.Name, "err", st.Error)
		}
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	b.stop = stop
	b.wg.Go(func() { b.monitor.Run(runCtx) })
	return b, nil
}

// warm opens every pool's connections (MaxConns per node, all kept idle)
// at start-up, every node at once, within schemaTimeout. Without it, a
// service started under load opens them request by request, each within
// the request's own deadline; under load the connects overran it, and the
// replicas were taken out of rotation at once for it (issue 20: 46 times in
// the first 8 s). A node that does not answer is not an error here: its
// pool connects on use.
func (b *Balancer) warm(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	nodes := append([]NodeDB{{Name: Primary, DB: b.primary}}, b.replicas...)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if opened, err := warm(internal(ctx), n.DB, b.cfg.MaxConns); opened < b.cfg.MaxConns {
				b.cfg.Logger.Warn("ryw: could not open every connection at start-up; the pool connects on use", "node", n.Name, "opened", opened, "want", b.cfg.MaxConns, "err", err)
			}
		})
	}
	wg.Wait()
}

// schemaTimeout bounds the start-up check of the fence table.
const schemaTimeout = 5 * time.Second

// checkNodes connects to every node that answers and refuses, at start-up,
// what can never work, rather than failing request after request: a pooler
// found with PoolerNone (ErrPooled), and a replica that is an Amazon
// Aurora reader (ErrAurora). A node that does not answer is not an error
// here.
func (b *Balancer) checkNodes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	nodes := append([]NodeDB{{Name: Primary, DB: b.primary}}, b.replicas...)
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			var aurora bool
			err := n.DB.QueryRowContext(internal(ctx), auroraQuery).Scan(&aurora)
			switch {
			case errors.Is(err, ErrPooled):
				errs[i] = fmt.Errorf("ryw: %s: %w", n.Name, err)
			case err == nil && aurora && n.Name != Primary:
				errs[i] = fmt.Errorf("ryw: %s: %w", n.Name, ErrAurora)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// auroraQuery tells an Aurora PostgreSQL instance by its aurora_version()
// function, which community PostgreSQL does not have.
const auroraQuery = `SELECT to_regprocedure('aurora_version()') IS NOT NULL`

// ErrAurora refuses an Amazon Aurora reader as a replica: Aurora readers
// share the writer's storage instead of replaying its WAL, and expose no
// replay position that a write's token can be compared with, so no read
// on them could be checked.
var ErrAurora = errors.New("an Aurora reader exposes no WAL replay position to check reads against: list only streaming replicas (use the Aurora writer as Primary, and send stale-ok reads to the reader endpoint yourself)")

// checkSchema makes sure ryw's tables exist, and that the user may use
// them (or creates them with CreateSchema). A primary that does not answer is not an error here: it
// may start after the service.
func (b *Balancer) checkSchema(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	if b.cfg.CreateSchema {
		if _, err := b.primary.ExecContext(ctx, Schema); err != nil {
			if IsUnavailable(err) || ctx.Err() != nil {
				b.cfg.Logger.Warn("ryw: the primary is unavailable at start-up; the fence table is created by the first instance that reaches it", "err", err)
				return nil
			}
			return fmt.Errorf("ryw: create the fence table (Schema) on the primary: %w", err)
		}
		return nil
	}
	var fence string
	err := b.primary.QueryRowContext(ctx, "SELECT lsn::text FROM ryw_fence WHERE id = 1").Scan(&fence)
	if err == nil {
		// Each instance writes its acknowledgement of the fence; a row
		// that cannot be written keeps its own-write reads on the
		// primary. Checked in a transaction that is rolled back.
		err = checkAckTable(ctx, b.primary)
	}
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "42P01", errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("ryw: a table of ryw's is missing on the primary (%v): apply ryw.Schema (schema.sql) with your migrations, or set Config.CreateSchema", err)
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return fmt.Errorf("ryw: the primary's user lacks a grant on ryw's tables (SELECT, UPDATE on ryw_fence; SELECT, INSERT, UPDATE, DELETE on ryw_fence_ack): %w", err)
	default:
		b.cfg.Logger.Warn("ryw: could not check ryw's tables at start-up (the primary may not be up yet)", "err", err)
		return nil
	}
}

// checkAckTable writes and deletes a row of ryw_fence_ack, as each monitor
// does, in a transaction it rolls back.
func checkAckTable(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO ryw_fence_ack (instance, timeline, fence, at) VALUES ('ryw start-up check', 0, '0/0', now())
		ON CONFLICT (instance) DO UPDATE SET at = excluded.at`); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM ryw_fence_ack").Scan(&n); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "DELETE FROM ryw_fence_ack WHERE instance = 'ryw start-up check'")
	return err
}

// GORM returns the *gorm.DB to build repositories on. Inside a request
// wrapped by Middleware (or a Job), plain calls such as
// db.WithContext(ctx).Take(&u, id) are routed by the request's decision,
// checked against the replica's replay position on the connection that
// runs them, and retried on the primary if the replica fails; writes run
// on the primary and are recorded before the response is sent.
func (b *Balancer) GORM() *gorm.DB { return b.gorm }

// SQL returns the handle for database/sql code: its methods fit sqlc's
// DBTX interface, and it begins transactions (on the primary).
func (b *Balancer) SQL() *DB { return b.sql }

// Mode returns the balancer's mode.
func (b *Balancer) Mode() Mode { return b.cfg.Mode }

// Status returns what the balancer knows of each replica.
func (b *Balancer) Status() []ReplicaStatus { return b.monitor.Status() }

// Counts returns how many routing decisions were made, by reason and by
// node, with the other events the router counts.
func (b *Balancer) Counts() CountsSnapshot { return b.router.Counts() }

// Stats are counters of the balancer's own round trips, for metrics.
type Stats struct {
	// LookupPipelines is how many pipelines the Redis lookups used
	// (lookups made at the same time share one).
	LookupPipelines int64
	// ReplayChecks is how many replay checks went to a replica: reads whose
	// connection had not yet seen the replica replay far enough.
	ReplayChecks int64
	// CachedLookups is how many lookups the tracker's cache answered,
	// and CacheBarriers how many barriers it published for them (reads in flight at
	// the same time share one).
	CachedLookups, CacheBarriers int64
	// LeaseAcknowledged is how many writes waited for the caches that hold
	// a lease until every one acknowledged them, and LeaseLapsed how many
	// until a lease ended instead (a cache gone, cut off or too busy, or
	// Redis lost its list of caches); see Config.CacheLease.
	LeaseAcknowledged, LeaseLapsed int64
	// Settles is how many reads on the primary settled first, after the
	// client's reads on a replica (see docs/SESSIONS.md); SettleWaits how
	// many of them waited for a transaction to end; Unsettled how many
	// failed with ErrUnsettled.
	Settles, SettleWaits, Unsettled int64
}

// Stats returns the balancer's round-trip counters.
func (b *Balancer) Stats() Stats {
	hits, barriers := b.tracker.CachedLookups()
	acked, lapsed := b.tracker.LeaseWaits()
	return Stats{LookupPipelines: b.tracker.LookupPipelines(), ReplayChecks: ReplayChecks(), CachedLookups: hits, CacheBarriers: barriers,
		LeaseAcknowledged: acked, LeaseLapsed: lapsed,
		Settles: settles.Load(), SettleWaits: settleWaits.Load(), Unsettled: unsettled.Load()}
}

// Nodes names every node a Ping can check: Primary, each replica, and
// NodeRedis.
func (b *Balancer) Nodes() []string {
	out := []string{Primary}
	for _, r := range b.replicas {
		out = append(out, r.Name)
	}
	return append(out, NodeRedis)
}

// NodeRedis names Redis in Nodes and Ping.
const NodeRedis = "redis"

// Ping checks that a node answers: the primary, a replica (which must be
// in recovery: a promoted former replica is not one), or Redis.
func (b *Balancer) Ping(ctx context.Context, node string) error {
	switch node {
	case Primary:
		return b.primary.PingContext(ctx)
	case NodeRedis:
		return b.redis.Ping(ctx).Err()
	}
	db := b.replica(node)
	if db == nil {
		return fmt.Errorf("ryw: no node named %q", node)
	}
	var standby bool
	if err := db.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return err
	}
	if !standby {
		return errors.New("not in recovery: the node is not a standby")
	}
	return nil
}

// replica returns the named replica's pool, or nil.
func (b *Balancer) replica(name string) *sql.DB {
	for _, r := range b.replicas {
		if r.Name == name {
			return r.DB
		}
	}
	return nil
}

// Close stops following the nodes and closes every pool and the Redis
// client. Requests still running fail.
func (b *Balancer) Close() error {
	b.once.Do(func() {
		if b.stop != nil {
			b.stop()
		}
		b.wg.Wait()
		b.closePools()
	})
	return nil
}

func (b *Balancer) closePools() {
	for _, r := range b.replicas {
		r.DB.Close()
	}
	for _, db := range b.monPools {
		db.Close()
	}
	if b.primary != nil {
		b.primary.Close()
	}
	if b.tracker != nil {
		b.tracker.Close()
	}
	if b.redis != nil {
		b.redis.Close()
	}
}

// PrimaryStatus is what the balancer knows of the primary.
type PrimaryStatus struct {
	// System and Timeline identify the primary's cluster and history, as
	// last seen ("" and 0 before it first answered); Timeline rises at each
	// failover.
	System   string
	Timeline int
	// FenceAsOf is when the poll that last read the primary's fence
	// started (zero if none has): own-write reads go to the primary when it
	// is older than the fence lease, and while the instance cannot
	// acknowledge the fence (ryw_fence_ack; the log says so).
	FenceAsOf time.Time
	// FenceAcknowledged: this instance's acknowledgement of the fence
	// (ryw_fence_ack) is live. While it is not (the role lacks the grant,
	// or the primary refuses writes), the instance routes by no fence: its
	// own-write reads go to the primary.
	FenceAcknowledged bool
	// HistoryError is why the primary's timeline history cannot be read
	// ("" when it can, and before the primary first answered); usually
	// ErrHistoryNotGranted's text. Nothing is wrong until a failover; after
	// one, reads that must show a write made before it go to the primary
	// until the write's mark expires, and writes the failover lost are not
	// detected.
	HistoryError string
}

// Primary returns what the balancer knows of the primary.
func (b *Balancer) Primary() PrimaryStatus {
	c := b.monitor.Cluster()
	asOf := b.monitor.fenceRead()
	return PrimaryStatus{System: c.System, Timeline: c.Timeline, FenceAsOf: asOf, FenceAcknowledged: b.monitor.fenceAcknowledged(),
		HistoryError: b.monitor.HistoryError()}
}
