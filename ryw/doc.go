// Package ryw is read-your-writes over PostgreSQL streaming replicas: reads
// are offloaded to the replicas, and still no user ever sees their own write
// disappear. Per request, it decides which node may serve the user's reads:
// a replica that has replayed the user's last write (known from Redis, and
// from the signed token the client sends back), else the primary.
//
// It depends on GORM, dbresolver, pgx and go-redis, never on a web
// framework (package rywgin adapts it to Gin) or on the application that
// embeds it. A service adopts it in three steps:
//
//	rw, err := ryw.New(ctx, ryw.Config{
//		Primary:  "postgres://app@db-primary/app",
//		Replicas: []ryw.Replica{{URL: "postgres://app@db-replica1/app"}},
//		Redis:    "redis://redis:6379/0",
//		TokenKey: key, // the same on every instance
//	})
//	defer rw.Close()
//	repos := NewRepos(rw.GORM()) // or sqlc's New(rw.SQL())
//	handler = rw.Middleware(ryw.HTTPOptions{User: callerID})(handler)
//
// Handlers and repositories stay plain: a db.WithContext(ctx).Take(...) run
// with the request's context is routed by the request's decision, checked
// against the replica's replay position on the very connection that runs
// it, and retried on the primary if the replica fails; a write on the
// primary (Create, Save, Exec, INSERT ... RETURNING, a transaction) is
// recorded before the response's headers go out, and a write that cannot
// be secured turns into a 503. Work outside HTTP uses Balancer.Begin.
//
// The fence table (Schema, or schema.sql) must exist on the primary: apply
// it with your migrations, or set Config.CreateSchema.
//
// The lower-level pieces (Router, Monitor, RedisTracker, OpenPool, Open)
// remain exported for code that assembles them itself; most services need
// none of them. docs/LIBRARY.md in the repository is the guide, and
// docs/CONSISTENCY.md explains why the guarantee holds under faults.
package ryw
