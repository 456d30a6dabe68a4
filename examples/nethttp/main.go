// Command nethttp is a small notes service on net/http and database/sql
// that reads from PostgreSQL streaming replicas without ever hiding a
// caller's own writes from them: read-your-writes, with package ryw.
//
//	POST /notes             {"body": "buy milk"}: save a note (on the primary)
//	GET  /notes             the caller's notes: they show the caller's own writes
//	GET  /users/{id}/notes  anyone's notes: may be slightly stale, any replica
//	GET  /healthz           the process is up
//
// The caller names themselves with X-User-Id (a real service verifies a
// session or a bearer token in userID instead); without it the answer is
// 401. Responses say which node served them (X-Served-By) and why
// (X-Routing-Reason), and carry the client's token (X-RYW-Token and the
// ryw_token cookie), which a client may send back.
//
// The queries (queries.go) are written as sqlc generates them and the
// handlers (notes.go) are plain net/http: neither calls ryw. The wiring is
// in newApp: one ryw.New, balancer.SQL() as sqlc's DBTX, and the
// middleware on each route.
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
//	HTTP_ADDR=127.0.0.1:8081 go run ./examples/nethttp
//
//	# terminal 3
//	curl -si -X POST localhost:8081/notes -H 'X-User-Id: ada' -d '{"body":"buy milk"}'
//	curl -si localhost:8081/notes -H 'X-User-Id: ada'           # X-Served-By: primary, X-Routing-Reason: recent-write
//	sleep 5; curl -si localhost:8081/notes -H 'X-User-Id: ada'  # a replica that has the note: no-recent-write
//	curl -si localhost:8081/users/ada/notes -H 'X-User-Id: bob' # any replica: stale-ok
//	curl -si localhost:8081/notes                               # 401
//
// Start it with RYW_MODE=lsn to read from any replica that has already
// replayed the note (lsn-caught-up), or with RYW_MODE=off to see the bug
// this prevents: a read right after a save that lands on the delayed
// replica2 does not show the note. Ctrl-C stops it gracefully.
//
// Environment:
//
//	HTTP_ADDR              where to listen (default 127.0.0.1:8081)
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

	"github.com/ryw-go/ryw/ryw"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nethttp:", err)
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
		c.addr = "127.0.0.1:8081"
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
	balancer, err := ryw.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	db := balancer.SQL() // sqlc's DBTX
	if _, err := db.ExecContext(ctx, schema); err != nil {
		balancer.Close()
		return nil, nil, fmt.Errorf("create the notes table on the primary: %w", err)
	}
	h := &notes{q: New(db), logger: logger}
	own := balancer.Middleware(ryw.HTTPOptions{User: userID})
	staleOK := balancer.Middleware(ryw.HTTPOptions{User: userID, Access: ryw.Always(ryw.StaleRead)})

	mux := http.NewServeMux()
	mux.Handle("POST /notes", own(http.HandlerFunc(h.create)))
	mux.Handle("GET /notes", own(http.HandlerFunc(h.mine)))
	mux.Handle("GET /users/{id}/notes", staleOK(http.HandlerFunc(h.theirs)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return mux, balancer.Close, nil
}

// schema is the service's own table, created on the primary at start-up;
// a real service applies it with its migrations.
const schema = `
CREATE TABLE IF NOT EXISTS notes (
    id         bigserial   PRIMARY KEY,
    user_id    text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_user_id_id ON notes (user_id, id);
`
