// Command api is the ryw web service: it reads its configuration from the
// environment, migrates the primary, connects to the replicas and Redis, and
// serves HTTP until SIGINT or SIGTERM, then shuts down gracefully.
//
//	@title						ryw: read-your-writes over PostgreSQL replicas
//	@version					1.0
//	@description				Reads go to streaming replicas; a user's own writes are always visible to that user. Every /api response says which node served it (X-Served-By) and why (X-Routing-Reason).
//	@BasePath					/
//	@securityDefinitions.apikey	DemoUser
//	@in							header
//	@name						X-Demo-UserId
//	@description				AUTH_MODE=demo (the default): the caller's user id, a UUID, NOT verified. Without it, a default demo user. Refused with 400 in jwt mode.
//	@securityDefinitions.apikey	BearerAuth
//	@in							header
//	@name						Authorization
//	@description				AUTH_MODE=jwt: type "Bearer " and then the token, e.g. Bearer eyJhbGciOi... (with devstack: bin/devstack token <uuid>). The user is the token's sub.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// defaultGCPercent is the API's GOGC unless the environment sets one.
const defaultGCPercent = 200

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	redis.SetLogger(quietRedis{})
	if os.Getenv("GOGC") == "" {
		// Under many concurrent requests the collector ran for 5-8% of
		// the CPU (docs/PROFILING.md, "Overload"); the live heap is tens of
		// megabytes, so letting it grow to three times that before each
		// cycle is cheap. GOGC, when set, is the runtime's own.
		debug.SetGCPercent(defaultGCPercent)
	}
	logs := newLogWriter(os.Stderr)
	err := run(ctx, os.Getenv, logs)
	logs.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ryw api:", err)
		os.Exit(1)
	}
}

// run is the whole program, with its inputs passed in so tests can drive it.
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	app, err := newApp(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	defer app.close()
	return app.serve(ctx)
}
