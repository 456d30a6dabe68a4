package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/config"
	"github.com/ryw-go/ryw/controllers"
	_ "github.com/ryw-go/ryw/docs" // swagger spec, served at /swagger/index.html
	"github.com/ryw-go/ryw/middleware"
	"github.com/ryw-go/ryw/migrations"
	"github.com/ryw-go/ryw/repositories"
	"github.com/ryw-go/ryw/ryw"
	"github.com/ryw-go/ryw/services"
	"github.com/ryw-go/ryw/web"
)

// startupTimeout bounds how long the API waits for the primary at start-up
// (it may start before the database, as in docker-compose).
const startupTimeout = 60 * time.Second

// app is everything run wires together; close releases it.
type app struct {
	cfg      config.Config
	logger   *slog.Logger
	rw       *ryw.Balancer
	handler  http.Handler
	ui       *controllers.UIController
	keys     *middleware.Keys // jwt mode: the issuer's keys
	stopAuth context.CancelFunc
}

func newApp(ctx context.Context, getenv func(string) string, stderr io.Writer) (_ *app, err error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	a := &app{cfg: cfg, logger: newLogger(cfg, stderr)}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.logger.Info("starting", "config", cfg)
	if err := a.migrate(ctx); err != nil {
		return nil, err
	}
	metrics := newMetrics()
	replicas := make([]ryw.Replica, len(cfg.Replicas))
	for i, r := range cfg.Replicas {
		replicas[i] = ryw.Replica{Name: r.Name, URL: r.URL}
	}
	// Nodes that are down are not fatal: pools connect lazily, and a
	// replica joins the rotation once it answers.
	a.rw, err = ryw.New(ctx, ryw.Config{
		Primary: cfg.DatabaseURL, Replicas: replicas, Redis: cfg.RedisURL,
		Mode: cfg.Mode, Window: cfg.Window, MarkerTTL: cfg.MarkerTTL, MaxWait: cfg.MaxWait, UnknownWritesOnReplicas: cfg.UnknownWritesOnReplicas,
		NoMonotonicReads: !cfg.Monotonic, NoMarkCache: !cfg.MarkCache, CacheLease: cacheLease(cfg.CacheLease), StaleReadsWithoutPrimary: cfg.StaleReadsWithoutPrimary,
		TokenKey:       []byte(cfg.TokenKey),
		PrimaryTimeout: cfg.PrimaryTimeout, ReplicaTimeout: cfg.ReplicaTimeout, PollInterval: cfg.PollInterval, FenceLease: cfg.FenceLease, NoFenceAcks: !cfg.FenceAcks,
		Pooler: cfg.RywPooler(),
		GORM: &gorm.Config{Logger: slowQueries{gormlogger.NewSlogLogger(a.logger, gormlogger.Config{
			SlowThreshold: slowQuery, LogLevel: gormlogger.Warn,
		})}},
		Logger: a.logger, ObserveRedis: metrics.observeRedis,
	})
	if err != nil {
		return nil, err
	}
	metrics.watch(a.rw)
	db := a.rw.GORM()
	profiles := services.NewProfiles(repositories.NewUsers(db))
	catalog := services.NewCatalog(repositories.NewProducts(db))

	health := services.NewHealth(a.probes()).WithRouting(a.rw, a.rw).WithPrimary(a.rw).WithDetails(cfg.ReadyzDetails)
	gin.SetMode(gin.ReleaseMode)
	identity, required, err := a.identity(ctx)
	if err != nil {
		return nil, err
	}
	if a.keys != nil {
		health.WithIssuer(a.keys.State)
	}
	// X-RYW-Mode: off is honoured only where identity is not verified anyway.
	modeOverride := cfg.Auth.Mode == config.AuthDemo
	if cfg.LivePage {
		a.ui, err = controllers.NewUIController(controllers.UIInfo{
			Mode: string(cfg.Mode), Auth: cfg.Auth.Mode, Window: cfg.Window.String(),
			ModeOverride: modeOverride, LabURL: cfg.LabURL,
		}, web.Files(), a.rw.Status, a.rw.Counts)
		if err != nil {
			return nil, err
		}
	}
	a.handler = controllers.NewRouter(controllers.Deps{
		Metrics:      metrics.reg,
		Logger:       a.logger,
		Identity:     identity,
		Required:     required,
		ModeOverride: modeOverride,
		MaxInFlight:  cfg.MaxInFlight,
		QueueWait:    cfg.QueueWait,
		UI:           a.ui,
		RYW:          a.rw,
		Health:       controllers.NewHealthController(health),
		Me:           controllers.NewMeController(profiles),
		Products:     controllers.NewProductsController(catalog),
	})
	return a, nil
}

// identity is the middleware that says who the caller is, per AUTH_MODE;
// required is its variant for endpoints that need a user (the optional one
// lets anonymous callers through, for the catalog).
func (a *app) identity(ctx context.Context) (optional, required gin.HandlerFunc, err error) {
	if a.cfg.Auth.Mode != config.AuthJWT {
		a.logger.Warn("AUTH_MODE=demo: callers are identified by the X-Demo-UserId header, which is NOT verified; anyone can act as anyone. Use AUTH_MODE=jwt for a real deployment")
		id := middleware.Identity(middleware.DefaultDemoUser)
		return id, id, nil
	}
	au := a.cfg.Auth
	if u, _ := url.Parse(au.JWKSURL); u != nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		a.logger.Warn("AUTH_JWKS_URL is plain http on a non-loopback host: whoever sits on the path can substitute keys; use https", "url", au.JWKSURL)
	}
	authCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopAuth = cancel
	a.keys = middleware.NewKeys(authCtx, middleware.KeysConfig{
		URL: au.JWKSURL, Refresh: au.JWKSRefresh, MinRefresh: au.JWKSMinRefresh,
		Timeout: jwksTimeout, Client: &http.Client{Timeout: jwksTimeout}, Logger: a.logger,
	})
	v := middleware.NewVerifier(a.keys, middleware.VerifierConfig{Issuer: au.Issuer, Audience: au.Audience, Leeway: au.Leeway})
	return middleware.BearerIdentity(v, false), middleware.BearerIdentity(v, true), nil
}

// jwksTimeout bounds one fetch of the issuer's key set.
const jwksTimeout = 5 * time.Second

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// migrate applies the schema (the ryw fence table included), retrying
// while the primary is unreachable, on a pool of its own.
func (a *app) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	db, err := sql.Open("pgx", a.cfg.MigrationURL)
	if err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	defer db.Close()
	delay := 100 * time.Millisecond
	for {
		err := a.checkMigrationPooler(ctx, db)
		if errors.Is(err, errMigrationPooled) {
			return err
		}
		n, err := 0, err
		if err == nil {
			n, err = migrations.Up(ctx, db, a.logger)
		}
		if err == nil {
			a.logger.Info("schema up to date", "applied", n)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("migrate the primary (gave up after %s): %w", startupTimeout, err)
		}
		a.logger.Warn("migrations failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

var errMigrationPooled = errors.New("DATABASE_MIGRATION_URL (default DATABASE_URL) goes through a connection pooler: the migrations hold a session-level lock, which a transaction pooler does not keep; set DATABASE_MIGRATION_URL to the primary's own address, or DATABASE_POOLER=session if the pooler pools sessions")

// checkMigrationPooler refuses to migrate through a transaction pooler: a
// connection that goes through a pooler was given the pooler's own process
// id, not its server's.
func (a *app) checkMigrationPooler(ctx context.Context, db *sql.DB) error {
	if a.cfg.Pooler == config.PoolerSession {
		return nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var pid uint32
	if err := conn.Raw(func(dc any) error {
		pid = dc.(*stdlib.Conn).Conn().PgConn().PID()
		return nil
	}); err != nil {
		return err
	}
	var server int64
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&server); err != nil {
		return err
	}
	if uint32(server) != pid {
		return errMigrationPooled
	}
	return nil
}

func (a *app) probes() (services.Probe, []services.Probe, services.Probe, time.Duration) {
	probe := func(node string) services.Probe {
		return services.Probe{Name: node, Check: func(ctx context.Context) error { return a.rw.Ping(ctx, node) }}
	}
	var replicas []services.Probe
	for _, r := range a.cfg.Replicas {
		replicas = append(replicas, probe(r.Name))
	}
	return probe(ryw.Primary), replicas, probe(ryw.NodeRedis), time.Second
}

// serve runs the HTTP server until ctx ends, then shuts it down gracefully.
func (a *app) serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR=%s: %w", a.cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	uiCtx, stopUI := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if a.ui != nil {
		wg.Go(func() { a.ui.Run(uiCtx) })
	}
	defer func() {
		stopUI()
		wg.Wait()
	}()
	if a.cfg.PprofAddr != "" {
		stop, err := servePprof(a.cfg.PprofAddr, a.logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	a.logger.Info("listening", "addr", ln.Addr().String(), "mode", a.cfg.Mode)
	return serveUntil(ctx, srv, ln, a.cfg.ShutdownWait, a.logger)
}

// serveUntil serves on ln until ctx ends, then stops accepting and lets
// in-flight requests finish for up to wait before closing what remains.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, wait time.Duration, logger *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "wait", wait)
	sctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("graceful shutdown did not finish within %s: %w", wait, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	logger.Info("stopped")
	return nil
}

func (a *app) close() {
	if a.stopAuth != nil {
		a.stopAuth()
	}
	if a.rw != nil {
		a.rw.Close()
	}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// slowQuery is how long a query runs before GORM's logger reports it.
const slowQuery = 500 * time.Millisecond

// slowQueries logs GORM's slow queries only. Failed queries are the app's
// to judge: a read that fails on a replica is retried, a cancelled one is
// the client's doing, and the rest are logged with the request id.
//
// It decides before calling GORM's logger, whose Trace renders the SQL
// with its arguments (a regular expression over the statement) for every
// query, fast or not: 2-3% of the API's CPU in a profile.
type slowQueries struct{ gormlogger.Interface }

func (l slowQueries) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if err == nil && time.Since(begin) >= slowQuery {
		l.Interface.Trace(ctx, begin, fc, nil)
	}
}

func (l slowQueries) LogMode(level gormlogger.LogLevel) gormlogger.Interface {
	return slowQueries{l.Interface.LogMode(level)}
}

// quietRedis discards go-redis's own log lines (dial failures while Redis
// is down, mostly): they are expected, and the tracker and the readiness
// report say what matters, in the service's log format.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// cacheLease maps RYW_CACHE_LEASE (0: off) to ryw.Config's (negative: off).
func cacheLease(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
