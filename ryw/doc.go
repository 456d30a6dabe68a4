// Package ryw is the read-your-writes core: it decides, per request, which
// PostgreSQL node may serve a user's reads so that the user always sees their
// own writes, while every other read is offloaded to streaming replicas.
//
// It depends on GORM, dbresolver, pgx and go-redis only, never on a web
// framework or on the application that embeds it. Wiring it into a GORM
// application takes the fence table on the primary (Schema, applied with the
// application's migrations) and five pieces:
//
//	primary, _ := ryw.OpenPool(primaryURL, false, ryw.PoolOptions{MaxOpen: 20})
//	replica1, _ := ryw.OpenPool(replica1URL, true, ryw.PoolOptions{MaxOpen: 20})
//	db, _ := ryw.Open(primary, []ryw.NodeDB{{Name: "replica1", DB: replica1}}, nil)
//
//	monitor := ryw.NewMonitor(monitorPrimaryPool, monitorReplicaPools, 50*time.Millisecond, logger)
//	go monitor.Run(ctx)
//
//	wal := ryw.PrimaryWAL{DB: primary}
//	redisClient, _ := ryw.NewRedisClient("redis://localhost:6379/0")
//	tracker := ryw.NewRedisTracker(redisClient, ryw.TrackerConfig{TTL: 10 * time.Minute, WAL: wal})
//	router := ryw.NewRouter(ryw.RouterConfig{
//		Mode: ryw.ModeLSN, Window: 5 * time.Second, MarkerTTL: 10 * time.Minute,
//		Tracker: tracker, Replicas: monitor, WAL: wal,
//	})
//
// Then, per request: put the router's Decision in the context
// (router.ForOwnRead, ForStaleRead or ForWrite, with WithDecision), run GORM
// with that context, wrap reads in router.Read so that a read failing on a
// replica is retried on the primary, and call router.RecordWrite after a
// write commits (it returns ErrUnconfirmed if the write could not be
// secured: tell the client). WithObservation reports which node really
// served, and the write's token for the client. docs/CONSISTENCY.md in the
// repository explains why this holds under faults.
package ryw
