// Package ryw is the read-your-writes core: it decides, per request, which
// PostgreSQL node may serve a user's reads so that the user always sees their
// own writes, while every other read is offloaded to streaming replicas.
//
// It depends on GORM, dbresolver, pgx and go-redis only, never on a web
// framework or on the application that embeds it. Wiring it into a GORM
// application takes five pieces:
//
//	primary, _ := ryw.OpenPool(primaryURL, false, ryw.PoolOptions{MaxOpen: 20})
//	replica1, _ := ryw.OpenPool(replica1URL, true, ryw.PoolOptions{MaxOpen: 20})
//	db, _ := ryw.Open(primary, []ryw.NodeDB{{Name: "replica1", DB: replica1}}, nil)
//
//	monitor := ryw.NewMonitor(monitorPrimaryPool, monitorReplicaPools, 50*time.Millisecond, logger)
//	go monitor.Run(ctx)
//
//	redisClient, _ := ryw.NewRedisClient("redis://localhost:6379/0")
//	router := ryw.NewRouter(ryw.RouterConfig{
//		Mode: ryw.ModeLSN, Window: 5 * time.Second,
//		Tracker: ryw.NewRedisTracker(redisClient, 10*time.Minute),
//		Replicas: monitor, WAL: ryw.PrimaryWAL{DB: primary},
//	})
//
// Then, per request: put the router's Decision in the context
// (router.ForOwnRead, ForStaleRead or ForWrite, with WithDecision), run GORM
// with that context, wrap reads in router.Read so that a read failing on a
// replica is retried on the primary, and call router.RecordWrite after a
// write commits. WithObservation reports which node really served.
package ryw
