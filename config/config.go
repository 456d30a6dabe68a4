// Package config loads the service's one typed configuration from the
// environment and validates it at start-up, so that a bad value stops the
// process with a message naming the variable instead of failing later.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// Replica is one streaming replica the service may read from.
type Replica struct {
	Name string
	URL  string
}

// Config is everything the service reads from its environment.
type Config struct {
	HTTPAddr    string    // HTTP_ADDR
	DatabaseURL string    // DATABASE_URL: the primary
	Replicas    []Replica // DATABASE_REPLICA_URLS
	// Pooler says whether a connection pooler (PgBouncer) sits in front of
	// the nodes (DATABASE_POOLER): detect (default), none, transaction or
	// session.
	Pooler string
	// MigrationURL is where the schema migrations run (DATABASE_MIGRATION_URL,
	// default DATABASE_URL): they hold a session-level lock, which a
	// transaction pooler does not keep, so behind one it must reach the
	// primary directly.
	MigrationURL string
	RedisURL     string        // REDIS_URL
	Mode         ryw.Mode      // RYW_MODE
	Window       time.Duration // RYW_WINDOW
	MarkerTTL    time.Duration // RYW_MARKER_TTL
	PollInterval time.Duration // RYW_POLL_INTERVAL: how often replica positions are checked
	// FenceLease is how long an instance trusts the fence it last read
	// (RYW_FENCE_LEASE, default 300ms); the same on every instance.
	FenceLease time.Duration
	// FenceAcks ends a fenced write's wait once every instance has
	// acknowledged the fence (RYW_FENCE_ACKS, default true); false makes
	// it wait out the lease, while instances of a build before the
	// acknowledgements still run.
	FenceAcks bool
	MaxWait   time.Duration // RYW_MAX_WAIT: lsn mode, how long a read may wait for a replica to catch up
	// UnknownWritesOnReplicas sends, in lsn mode, reads whose user's
	// writes are unknown (Redis down) to a replica at the primary's
	// position instead of to the primary (RYW_UNKNOWN_WRITES=replica;
	// default primary).
	UnknownWritesOnReplicas bool
	// Monotonic turns on the session floor (RYW_MONOTONIC, default true):
	// a client's reads never go back in time. It applies in time and lsn
	// mode; false is the control that shows the regressions.
	Monotonic bool
	// MarkCache keeps looked-up users' marks in memory, kept true by Redis
	// pub/sub (RYW_MARK_CACHE, default true; not on a Redis Cluster).
	// false while instances of a build before it still run.
	MarkCache bool
	// CacheLease lets the mark cache answer own reads without a barrier
	// for this long after a shared one; every write then waits until each
	// instance's cache has acknowledged it, or that cache's lease has ended
	// (RYW_CACHE_LEASE, default 250ms; 0: no lease, a barrier per group of
	// reads). Off while instances of a build before it still run.
	CacheLease time.Duration
	// StaleReadsWithoutPrimary lets replicas serve stale-ok reads while the
	// primary does not answer (RYW_STALE_READS_WITHOUT_PRIMARY, default
	// false): availability over the risk of showing writes a failover then
	// loses.
	StaleReadsWithoutPrimary bool
	// ReplicaTimeout bounds connecting to a replica and each read on it
	// (RYW_REPLICA_TIMEOUT); a read that overruns is retried on the primary.
	ReplicaTimeout time.Duration
	// PrimaryTimeout bounds connecting to the primary and each piece of
	// work on it (RYW_PRIMARY_TIMEOUT); overrunning answers 503.
	PrimaryTimeout time.Duration
	// MaxInFlight bounds the API requests in progress at once
	// (MAX_IN_FLIGHT, default DefaultConnsPerNode for each node, the
	// primary and every replica: what their pools can serve at once);
	// the others wait their turn.
	MaxInFlight int
	// QueueWait is how long a request may wait for its turn before it is
	// refused with 503 overloaded (MAX_QUEUE_WAIT).
	QueueWait    time.Duration
	LogLevel     slog.Level    // LOG_LEVEL
	LogFormat    string        // LOG_FORMAT: text or json
	ShutdownWait time.Duration // SHUTDOWN_TIMEOUT
	// TokenKey signs the causal tokens given to clients (RYW_TOKEN_KEY, 32
	// bytes or more, the same on every instance). Empty: a random key per
	// process, so that tokens from other instances are ignored.
	TokenKey string
	// ReadyzDetails makes /readyz show error texts, WAL positions and the
	// routing counters (READYZ_DETAILS); off, it says only what is up.
	ReadyzDetails bool
	// PprofAddr, when set, serves Go's profiler (net/http/pprof) on this
	// address (PPROF_ADDR), apart from the public listener: keep it on
	// loopback.
	PprofAddr string
	// LivePage serves the live page at / and its state at /ui/state
	// (LIVE_PAGE, default true): replica lag, health and routing counts,
	// what /metrics shows. Turn it off where those must stay private.
	LivePage bool
	// LabURL is devstack's lab (RYW_LAB_URL): the live page shows buttons
	// that pause replicas and stop Redis through it. devstack sets it;
	// empty everywhere else.
	LabURL string
	// Auth says who the caller is: AUTH_MODE demo (X-Demo-UserId, not
	// verified) or jwt (Authorization: Bearer, verified against a JWKS).
	Auth Auth
}

// Auth modes.
const (
	AuthDemo = "demo"
	AuthJWT  = "jwt"
)

// Auth is how callers are identified.
type Auth struct {
	Mode string // AUTH_MODE: demo or jwt
	// The rest is for jwt mode only.
	JWKSURL  string // AUTH_JWKS_URL: the issuer's key set
	Issuer   string // AUTH_ISSUER: the tokens' iss
	Audience string // AUTH_AUDIENCE: the tokens' aud, this service
	// Leeway absorbs clock skew in exp, nbf and iat (AUTH_LEEWAY).
	Leeway time.Duration
	// JWKSRefresh is how often the key set is fetched in the background
	// (AUTH_JWKS_REFRESH).
	JWKSRefresh time.Duration
	// JWKSMinRefresh bounds how often a token with an unknown key makes
	// the service fetch the key set (AUTH_JWKS_MIN_REFRESH).
	JWKSMinRefresh time.Duration
}

// Defaults for the optional variables.
const (
	DefaultHTTPAddr       = ":8080"
	DefaultRedisURL       = "redis://127.0.0.1:6379/0"
	DefaultMode           = ryw.ModeTime
	DefaultWindow         = 5 * time.Second
	DefaultMarkerTTL      = 10 * time.Minute
	DefaultPollInterval   = 50 * time.Millisecond
	DefaultShutdownWait   = 10 * time.Second
	DefaultReplicaTimeout = time.Second
	DefaultPrimaryTimeout = 5 * time.Second
	DefaultAuthLeeway     = 30 * time.Second
	DefaultJWKSRefresh    = 5 * time.Minute
	DefaultJWKSMinRefresh = 10 * time.Second
	DefaultFenceLease     = ryw.DefaultFenceLease
	DefaultCacheLease     = ryw.DefaultCacheLease
	DefaultQueueWait      = 2 * time.Second
	// DefaultConnsPerNode is each node's pool size (ryw.DefaultMaxConns),
	// which MAX_IN_FLIGHT's default counts on.
	DefaultConnsPerNode = ryw.DefaultMaxConns
	// PollsPerLease is how many polls of the primary at least fit in the
	// fence lease (RYW_POLL_INTERVAL at most RYW_FENCE_LEASE / 5), so that
	// one late poll does not send own-write reads to the primary.
	PollsPerLease = 5
	// MinTokenKeyLen is the shortest RYW_TOKEN_KEY: 256 bits.
	MinTokenKeyLen = 32
)

// DATABASE_POOLER's values.
const (
	PoolerDetect      = "detect"
	PoolerNone        = "none"
	PoolerTransaction = "transaction"
	PoolerSession     = "session"
)

// RywPooler is the core's setting for Pooler.
func (c Config) RywPooler() ryw.Pooler {
	switch c.Pooler {
	case PoolerNone:
		return ryw.PoolerNone
	case PoolerTransaction, PoolerSession:
		return ryw.PoolerPresent
	}
	return ryw.PoolerDetect
}

// replicaName is what a replica may be called in DATABASE_REPLICA_URLS.
var replicaName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)

// Load reads the configuration through getenv (os.Getenv in production, a
// map in tests) and validates it. Every problem found is reported, each
// naming its variable, joined on one line.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	cfg := Config{
		HTTPAddr:                 l.str("HTTP_ADDR", DefaultHTTPAddr),
		DatabaseURL:              l.postgresURL("DATABASE_URL", l.str("DATABASE_URL", "")),
		Pooler:                   l.oneOf("DATABASE_POOLER", PoolerDetect, PoolerDetect, PoolerNone, PoolerTransaction, PoolerSession),
		MigrationURL:             l.postgresURL("DATABASE_MIGRATION_URL", l.str("DATABASE_MIGRATION_URL", "")),
		RedisURL:                 l.redisURL("REDIS_URL", l.str("REDIS_URL", DefaultRedisURL)),
		Mode:                     l.mode("RYW_MODE"),
		Window:                   l.duration("RYW_WINDOW", DefaultWindow),
		MarkerTTL:                l.duration("RYW_MARKER_TTL", DefaultMarkerTTL),
		PollInterval:             l.duration("RYW_POLL_INTERVAL", DefaultPollInterval),
		FenceLease:               l.duration("RYW_FENCE_LEASE", DefaultFenceLease),
		FenceAcks:                l.oneOf("RYW_FENCE_ACKS", "true", "true", "false") == "true",
		MaxWait:                  l.nonNegativeDuration("RYW_MAX_WAIT", 0),
		UnknownWritesOnReplicas:  l.oneOf("RYW_UNKNOWN_WRITES", "primary", "primary", "replica") == "replica",
		Monotonic:                l.oneOf("RYW_MONOTONIC", "true", "true", "false") == "true",
		MarkCache:                l.oneOf("RYW_MARK_CACHE", "true", "true", "false") == "true",
		CacheLease:               l.nonNegativeDuration("RYW_CACHE_LEASE", DefaultCacheLease),
		StaleReadsWithoutPrimary: l.oneOf("RYW_STALE_READS_WITHOUT_PRIMARY", "false", "false", "true") == "true",
		ReplicaTimeout:           l.duration("RYW_REPLICA_TIMEOUT", DefaultReplicaTimeout),
		PrimaryTimeout:           l.duration("RYW_PRIMARY_TIMEOUT", DefaultPrimaryTimeout),
		QueueWait:                l.duration("MAX_QUEUE_WAIT", DefaultQueueWait),
		LogLevel:                 l.level("LOG_LEVEL"),
		LogFormat:                l.oneOf("LOG_FORMAT", "text", "text", "json"),
		ShutdownWait:             l.duration("SHUTDOWN_TIMEOUT", DefaultShutdownWait),
		TokenKey:                 l.getenv("RYW_TOKEN_KEY"),
		ReadyzDetails:            l.oneOf("READYZ_DETAILS", "false", "false", "true") == "true",
		PprofAddr:                l.hostPort("PPROF_ADDR"),
		LivePage:                 l.oneOf("LIVE_PAGE", "true", "true", "false") == "true",
	}
	cfg.Replicas = l.replicas("DATABASE_REPLICA_URLS")
	cfg.Auth = l.auth()
	cfg.MaxInFlight = l.positiveInt("MAX_IN_FLIGHT", (1+len(cfg.Replicas))*DefaultConnsPerNode)
	if cfg.LabURL = l.str("RYW_LAB_URL", ""); cfg.LabURL != "" {
		if u, err := url.Parse(cfg.LabURL); err != nil || u.Scheme != "http" || u.Host == "" || u.Path != "" {
			l.fail(fmt.Sprintf("RYW_LAB_URL must be devstack's lab, like http://127.0.0.1:8091, got %q", cfg.LabURL))
		}
	}
	if cfg.MigrationURL == "" {
		cfg.MigrationURL = cfg.DatabaseURL
	}
	if l.str("DATABASE_URL", "") == "" {
		l.fail("DATABASE_URL is required: the primary's URL, e.g. postgres://user:pass@localhost:5432/ryw?sslmode=disable")
	}
	if cfg.Window > 0 && cfg.MarkerTTL > 0 && cfg.MarkerTTL < cfg.Window {
		l.fail(fmt.Sprintf("RYW_MARKER_TTL (%s) must be at least RYW_WINDOW (%s), or markers expire inside the window", cfg.MarkerTTL, cfg.Window))
	}
	if cfg.UnknownWritesOnReplicas && cfg.Mode != ryw.ModeLSN {
		l.fail(fmt.Sprintf("RYW_UNKNOWN_WRITES=replica needs RYW_MODE=lsn, got %q: time mode reads unknown writes from the primary", cfg.Mode))
	}
	if n := len(cfg.TokenKey); n > 0 && n < MinTokenKeyLen {
		l.fail(fmt.Sprintf("RYW_TOKEN_KEY must be at least %d bytes (a random secret, the same on every instance), got %d", MinTokenKeyLen, n))
	}
	if cfg.FenceLease > 0 && cfg.PollInterval > cfg.FenceLease/PollsPerLease {
		l.fail(fmt.Sprintf("RYW_POLL_INTERVAL must be at most %s (a fifth of RYW_FENCE_LEASE, %s), got %s", cfg.FenceLease/PollsPerLease, cfg.FenceLease, cfg.PollInterval))
	}
	if cfg.CacheLease > ryw.MaxCacheLease {
		l.fail(fmt.Sprintf("RYW_CACHE_LEASE must be at most %s (every write waits it out), got %s", ryw.MaxCacheLease, cfg.CacheLease))
	}
	if len(l.errs) > 0 {
		return Config{}, errors.New(strings.Join(l.errs, "; "))
	}
	return cfg, nil
}

// LogValue keeps passwords out of logs: the config is logged with every URL
// redacted.
func (c Config) LogValue() slog.Value {
	replicas := make([]string, len(c.Replicas))
	for i, r := range c.Replicas {
		replicas[i] = r.Name + "=" + RedactURL(r.URL)
	}
	return slog.GroupValue(
		slog.String("httpAddr", c.HTTPAddr),
		slog.String("databaseUrl", RedactURL(c.DatabaseURL)),
		slog.String("replicas", strings.Join(replicas, ",")),
		slog.String("pooler", c.Pooler),
		slog.String("migrationUrl", RedactURL(c.MigrationURL)),
		slog.String("redisUrl", RedactURL(c.RedisURL)),
		slog.String("mode", string(c.Mode)),
		slog.Duration("window", c.Window),
		slog.Duration("markerTtl", c.MarkerTTL),
		slog.Duration("pollInterval", c.PollInterval),
		slog.Duration("fenceLease", c.FenceLease),
		slog.Bool("fenceAcks", c.FenceAcks),
		slog.Duration("maxWait", c.MaxWait),
		slog.Bool("unknownWritesOnReplicas", c.UnknownWritesOnReplicas),
		slog.Bool("monotonic", c.Monotonic),
		slog.Bool("markCache", c.MarkCache),
		slog.Duration("cacheLease", c.CacheLease),
		slog.Bool("staleReadsWithoutPrimary", c.StaleReadsWithoutPrimary),
		slog.Duration("replicaTimeout", c.ReplicaTimeout),
		slog.Duration("primaryTimeout", c.PrimaryTimeout),
		slog.Int("maxInFlight", c.MaxInFlight),
		slog.Duration("queueWait", c.QueueWait),
		slog.Bool("tokenKeySet", c.TokenKey != ""),
		slog.String("labUrl", c.LabURL),
		slog.String("authMode", c.Auth.Mode),
		slog.String("authJwksUrl", RedactURL(c.Auth.JWKSURL)),
		slog.String("authIssuer", c.Auth.Issuer),
		slog.String("authAudience", c.Auth.Audience),
	)
}

// RedactURL returns the URL with any password, in the user info or in a
// password query parameter, replaced by "xxxxx". A string that does not
// parse as a URL is replaced entirely, since it may hold a secret.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	q := u.Query()
	for _, key := range []string{"password", "sslpassword"} {
		if q.Has(key) {
			q.Set(key, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// auth reads AUTH_*: in jwt mode the key set, issuer and audience are
// required, since a token checked against none of them proves nothing.
func (l *loader) auth() Auth {
	a := Auth{Mode: l.oneOf("AUTH_MODE", AuthDemo, AuthDemo, AuthJWT)}
	jwtOnly := []string{"AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_LEEWAY", "AUTH_JWKS_REFRESH", "AUTH_JWKS_MIN_REFRESH"}
	if a.Mode != AuthJWT {
		for _, name := range jwtOnly {
			if l.str(name, "") != "" {
				l.fail(fmt.Sprintf("%s is set but AUTH_MODE is %q: set AUTH_MODE=jwt to verify bearer tokens, or unset %s", name, a.Mode, name))
			}
		}
		return a
	}
	a.JWKSURL = l.str("AUTH_JWKS_URL", "")
	a.Issuer = l.str("AUTH_ISSUER", "")
	a.Audience = l.str("AUTH_AUDIENCE", "")
	a.Leeway = l.nonNegativeDuration("AUTH_LEEWAY", DefaultAuthLeeway)
	a.JWKSRefresh = l.duration("AUTH_JWKS_REFRESH", DefaultJWKSRefresh)
	a.JWKSMinRefresh = l.nonNegativeDuration("AUTH_JWKS_MIN_REFRESH", DefaultJWKSMinRefresh)
	if u, err := url.Parse(a.JWKSURL); a.JWKSURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		l.fail(fmt.Sprintf("AUTH_JWKS_URL must be the issuer's JWKS URL, like https://issuer.example.com/.well-known/jwks.json, got %q", a.JWKSURL))
	}
	if a.Issuer == "" {
		l.fail("AUTH_ISSUER is required with AUTH_MODE=jwt: the iss that tokens must carry")
	}
	if a.Audience == "" {
		l.fail("AUTH_AUDIENCE is required with AUTH_MODE=jwt: the aud that tokens must carry (this service's identifier at the issuer)")
	}
	if a.JWKSMinRefresh < time.Second {
		l.fail(fmt.Sprintf("AUTH_JWKS_MIN_REFRESH must be at least 1s (it bounds how often clients can make the service fetch the key set), got %s", a.JWKSMinRefresh))
	}
	if a.Leeway > 5*time.Minute {
		l.fail(fmt.Sprintf("AUTH_LEEWAY must be at most 5m (it lets expired tokens through for that long), got %s", a.Leeway))
	}
	return a
}

// loader collects every validation error instead of stopping at the first.
type loader struct {
	getenv func(string) string
	errs   []string
}

func (l *loader) fail(msg string) { l.errs = append(l.errs, msg) }

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d <= 0 {
		l.fail(fmt.Sprintf("%s must be a positive duration, got %q", name, raw))
		return 0
	}
	return d
}

func (l *loader) positiveInt(name string, def int) int {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		l.fail(fmt.Sprintf("%s must be a whole number of 1 or more, got %q", name, raw))
		return 0
	}
	return n
}

func (l *loader) nonNegativeDuration(name string, def time.Duration) time.Duration {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < 0 {
		l.fail(fmt.Sprintf("%s must be a duration of 0 or more, got %q", name, raw))
		return 0
	}
	return d
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(l.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	l.fail(fmt.Sprintf("%s must be one of %s, got %q", name, strings.Join(allowed, "|"), l.getenv(name)))
	return def
}

// hostPort reads an optional listen address, host:port.
func (l *loader) hostPort(name string) string {
	raw := l.str(name, "")
	if raw == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(raw); err != nil {
		l.fail(fmt.Sprintf("%s must be host:port, like 127.0.0.1:6060, got %q", name, raw))
		return ""
	}
	return raw
}

func (l *loader) mode(name string) ryw.Mode {
	return ryw.Mode(l.oneOf(name, string(DefaultMode), string(ryw.ModeTime), string(ryw.ModeLSN), string(ryw.ModeOff)))
}

func (l *loader) level(name string) slog.Level {
	raw := l.str(name, "info")
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(raw)); err != nil {
		l.fail(fmt.Sprintf("%s must be one of debug|info|warn|error, got %q", name, raw))
	}
	return lvl
}

// postgresURL validates a PostgreSQL connection URL. Error messages show the
// URL redacted.
func (l *loader) postgresURL(name, raw string) string {
	if raw == "" {
		return ""
	}
	if err := checkPostgresURL(raw); err != nil {
		l.fail(fmt.Sprintf("%s %s, got %q", name, err, RedactURL(raw)))
		return ""
	}
	return raw
}

func checkPostgresURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("must be a postgres:// URL")
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("must name a host")
	}
	return nil
}

func (l *loader) redisURL(name, raw string) string {
	c, err := ryw.NewRedisClient(raw)
	if err != nil {
		l.fail(fmt.Sprintf("%s must be a redis://, rediss:// or unix:// URL (%s), got %q", name, redactErr(err, raw), RedactURL(raw)))
		return ""
	}
	_ = c.Close() // built only to validate; it has not connected
	return raw
}

// redactErr keeps a parser's message but never the password it may quote.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// replicas parses DATABASE_REPLICA_URLS: comma-separated items, each a URL
// (named replica1, replica2, ... by position) or name=URL.
func (l *loader) replicas(name string) []Replica {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return nil
	}
	var out []Replica
	seen := map[string]bool{}
	for i, item := range strings.Split(raw, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			l.fail(fmt.Sprintf("%s has an empty item at position %d", name, i+1))
			continue
		}
		r := Replica{Name: fmt.Sprintf("replica%d", i+1), URL: item}
		// A URL's query holds '=' too, so name=URL is recognised only when
		// what precedes the first '=' is a bare name and a URL follows.
		if n, u, ok := strings.Cut(item, "="); ok && replicaName.MatchString(n) && strings.Contains(u, "://") {
			r = Replica{Name: n, URL: u}
		}
		if err := checkPostgresURL(r.URL); err != nil {
			l.fail(fmt.Sprintf("%s item %d %s (or name=URL), got %q", name, i+1, err, RedactURL(r.URL)))
			continue
		}
		if r.Name == "primary" {
			l.fail(fmt.Sprintf("%s: the name %q is reserved for the primary", name, r.Name))
			continue
		}
		if seen[r.Name] {
			l.fail(fmt.Sprintf("%s names %q twice", name, r.Name))
			continue
		}
		seen[r.Name] = true
		out = append(out, r)
	}
	return out
}
