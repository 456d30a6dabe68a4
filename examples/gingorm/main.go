// Command gingorm is a small profile service on Gin and GORM that reads
// from PostgreSQL streaming replicas without ever hiding a caller's own
// writes from them: read-your-writes, with package ryw.
//
//	PUT /profile            {"displayName": "Ada", "bio": "..."}: save the caller's profile (on the primary)
//	GET /profile            the caller's profile: it shows the caller's own writes
//	GET /users/:id/profile  anyone's profile: may be slightly stale, any replica
//	GET /healthz            the process is up
//
// The caller names themselves with X-User-Id (a real service verifies a
// session or a bearer token in userID instead); without it the answer is
// 401. Responses say which node served them (X-Served-By) and why
// (X-Routing-Reason), and carry the client's token (X-RYW-Token and the
// ryw_token cookie), which a client may send back.
//
// The repository and the handlers (profile.go) are plain GORM and Gin:
// neither calls ryw. The wiring is in newApp: one ryw.New,
// balancer.GORM() as the *gorm.DB, and rywgin.Middleware on each route.
//
// Run it against the stack `make run` starts, from the repository root:
//
//	# terminal 1: a primary, 2 replicas (replica2 applies WAL 2s late), Redis, the demo API on :8080
//	make run ARGS="-state /tmp/stack.json"
//
//	# terminal 2, once terminal 1 says "ready" (or copy the URLs it printed)
//	export DATABASE_URL="$(jq -r .primary /tmp/stack.json)"
//	export DATABASE_REPLICA_URLS="$(jq -r '[.replicas[] | .name+"="+.url] | join(",")' /tmp/stack.json)"
//	export REDIS_URL="$(jq -r .redis /tmp/stack.json)"
//	HTTP_ADDR=127.0.0.1:8082 go run ./examples/gingorm
//
//	# terminal 3
//	curl -si -X PUT localhost:8082/profile -H 'X-User-Id: ada' -d '{"displayName":"Ada","bio":"engines"}'
//	curl -si localhost:8082/profile -H 'X-User-Id: ada'           # X-Served-By: primary, X-Routing-Reason: recent-write
//	sleep 5; curl -si localhost:8082/profile -H 'X-User-Id: ada'  # a replica that has the profile: no-recent-write
//	curl -si localhost:8082/users/ada/profile -H 'X-User-Id: bob' # any replica: stale-ok
//	curl -si localhost:8082/profile                               # 401
//
// Start it with RYW_MODE=lsn to read from any replica that has already
// replayed the save (lsn-caught-up), or with RYW_MODE=off to see the bug
// this prevents: a read right after a save that lands on the delayed
// replica2 shows the old profile (or 404). Ctrl-C stops it gracefully.
//
// Environment:
//
//	HTTP_ADDR              where to listen (default 127.0.0.1:8082)
//	DATABASE_URL           the primary's URL (required)
//	DATABASE_REPLICA_URLS  the replicas, comma-separated, each url or name=url
//	                       (named replica1, replica2, ... otherwise; none: every read on the primary)
//	REDIS_URL              where each user's last write is recorded (default redis://127.0.0.1:6379/0)
//	RYW_MODE               time (default), lsn or off
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/ryw"
	"github.com/ryw-go/ryw/ryw/rywgin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gingorm:", err)
		os.Exit(1)
	}
}

// config is the service's configuration, read from the environment.
type config struct {
	addr string
	ryw  ryw.Config
}

func loadConfig(getenv func(string) string) (config, error) {
	c := config{addr: getenv("HTTP_ADDR"), ryw: ryw.Config{
		Primary: getenv("DATABASE_URL"),
		Redis:   getenv("REDIS_URL"),
		Mode:    ryw.Mode(getenv("RYW_MODE")),
	}}
	if c.addr == "" {
		c.addr = "127.0.0.1:8082"
	}
	if c.ryw.Mode == "" {
		c.ryw.Mode = ryw.ModeTime
	}
	if c.ryw.Primary == "" {
		return c, errors.New("DATABASE_URL is required: the primary's URL, like postgres://app@localhost:5432/app")
	}
	for item := range strings.SplitSeq(getenv("DATABASE_REPLICA_URLS"), ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		// name=url, or a bare url (whose query may hold '=' too).
		r := ryw.Replica{URL: item}
		if name, url, ok := strings.Cut(item, "="); ok && !strings.ContainsAny(name, ":/") {
			r = ryw.Replica{Name: name, URL: url}
		}
		c.ryw.Replicas = append(c.ryw.Replicas, r)
	}
	return c, nil
}

// run serves until ctx ends, then lets the requests in flight finish
// before it closes the balancer.
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	cfg.ryw.Logger = logger
	gin.SetMode(gin.ReleaseMode)
	handler, closeApp, err := newApp(ctx, cfg.ryw, logger)
	if err != nil {
		return err
	}
	defer closeApp() // after Shutdown: no request still uses the pools

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("listening", "addr", "http://"+ln.Addr().String(), "mode", cfg.ryw.Mode)

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// newApp builds the service on a new balancer and returns its handler and
// the function that releases it (the pools, Redis, the replica monitor).
// It is all the ryw wiring there is.
func newApp(ctx context.Context, cfg ryw.Config, logger *slog.Logger) (http.Handler, func() error, error) {
	cfg.CreateSchema = true // ryw's fence table; or apply ryw.Schema with your migrations
	cfg.GORM = &gorm.Config{Logger: gormlogger.NewSlogLogger(logger, gormlogger.Config{
		SlowThreshold: 200 * time.Millisecond, IgnoreRecordNotFoundError: true, LogLevel: gormlogger.Warn,
	})}
	balancer, err := ryw.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	db := balancer.GORM()
	if err := db.WithContext(ctx).AutoMigrate(&Profile{}); err != nil {
		balancer.Close()
		return nil, nil, fmt.Errorf("migrate the profiles table on the primary: %w", err)
	}
	h := handlers{profiles{db}}
	own := rywgin.Middleware(balancer, ryw.HTTPOptions{User: userID})
	staleOK := rywgin.Middleware(balancer, ryw.HTTPOptions{User: userID, Access: ryw.Always(ryw.StaleRead)})

	r := gin.New()
	r.Use(gin.Recovery(), renderErrors(logger))
	r.PUT("/profile", own, h.put)
	r.GET("/profile", own, h.mine)
	r.GET("/users/:id/profile", staleOK, h.theirs)
	r.GET("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	return r, balancer.Close, nil
}

// renderErrors answers the error a handler or a middleware attached
// (c.Error), if nothing was written yet, as
// {"error": {"code": ..., "message": ...}}.
func renderErrors(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		if len(c.Errors) == 0 || c.Writer.Written() {
			return
		}
		err := c.Errors.Last().Err
		status, code, message := errorStatus(err)
		if status >= http.StatusInternalServerError {
			logger.ErrorContext(c.Request.Context(), "request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
		}
		c.JSON(status, gin.H{"error": gin.H{"code": code, "message": message}})
	}
}

// errorStatus is the one table from errors to statuses: the client sees a
// stable code, the log the cause.
func errorStatus(err error) (status int, code, message string) {
	var bad badRequest
	switch {
	case errors.As(err, &bad):
		return http.StatusBadRequest, "bad_request", bad.msg
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, "not_found", err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable", "the database did not answer in time; try again"
	}
	// The middleware's refusals: 401 unauthenticated, 400 invalid_token;
	// anything else is 500 internal.
	return ryw.ErrorStatus(err)
}
