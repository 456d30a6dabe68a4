package ryw

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/plugin/dbresolver"
)

// Open returns a GORM handle over the primary and the replicas, for code
// that assembles the pieces itself (Balancer.GORM is the same handle, with
// retries and timeouts):
//
//   - dbresolver sends writes to the primary and, for queries without a
//     decision, reads to a random replica;
//   - each replica is also a named dbresolver resolver, so that a decision
//     can name the replica that serves a request;
//   - the Plugin applies the Decision in each query's context and records
//     in its Observation which node really ran the query.
//
// The pools are the caller's: Open neither pings nor closes them, so a node
// that is down at start-up is not an error.
func Open(primary *sql.DB, replicas []NodeDB, config *gorm.Config) (*gorm.DB, error) {
	return openGORM(primary, replicas, config, nil)
}

// openGORM is Open; with a router, a read that fails on a replica is
// retried on the primary, statements get the router's timeouts, and one
// without a decision runs on the primary.
func openGORM(primary *sql.DB, replicas []NodeDB, config *gorm.Config, router *Router) (*gorm.DB, error) {
	if config == nil {
		config = &gorm.Config{}
	} else {
		c := *config
		config = &c
	}
	config.DisableAutomaticPing = true
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: primary}), config)
	if err != nil {
		return nil, fmt.Errorf("open gorm: %w", err)
	}
	nodes := map[gorm.ConnPool]string{primary: Primary}
	if len(replicas) > 0 {
		all := make([]gorm.Dialector, len(replicas))
		for i, r := range replicas {
			all[i] = postgres.New(postgres.Config{Conn: r.DB})
			nodes[r.DB] = r.Name
		}
		resolver := dbresolver.Register(dbresolver.Config{Replicas: all})
		for i, r := range replicas {
			resolver.Register(dbresolver.Config{Replicas: []gorm.Dialector{all[i]}}, r.Name)
		}
		// The primary is a named resolver too, so that a statement routed
		// there can name its resolver (see OnPrimary): otherwise dbresolver
		// finds one by matching a regular expression against the raw SQL of
		// every such statement, a tenth of the API's CPU in a profile under
		// load (docs/PROFILING.md).
		resolver.Register(dbresolver.Config{Sources: []gorm.Dialector{postgres.New(postgres.Config{Conn: primary})}}, primaryResolver)
		if err := db.Use(resolver); err != nil {
			return nil, fmt.Errorf("register dbresolver: %w", err)
		}
	}
	if err := db.Use(&Plugin{nodes: nodes, primary: primary, router: router}); err != nil {
		return nil, err
	}
	return db, nil
}

// primaryResolver names the primary's dbresolver resolver. The colon keeps
// it from ever matching a table name.
const primaryResolver = "ryw:primary"

// OnPrimary returns db with its statements bound to the primary, naming
// the primary's resolver. A raw statement (db.Raw, db.Exec) routed only by
// the request's Decision is resolved once by dbresolver before the plugin
// sees it, and that first resolution scans the SQL with a regular
// expression; a statement that names its resolver up front skips it. Use it
// for raw statements on the hot path; it is what the Decision would do.
func OnPrimary(db *gorm.DB) *gorm.DB {
	return db.Clauses(dbresolver.Use(primaryResolver), dbresolver.Write)
}

func onPrimary(stmt *gorm.Statement) {
	if m, ok := dbresolver.Use(primaryResolver).(gorm.StatementModifier); ok {
		m.ModifyStatement(stmt)
	}
	dbresolver.Write.ModifyStatement(stmt)
}

// Plugin is the GORM plugin that applies each request's Decision.
type Plugin struct {
	nodes   map[gorm.ConnPool]string // pool -> node name
	primary *sql.DB
	router  *Router // nil: no retries, timeouts or default (Open)
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return "ryw" }

// Initialize registers the callbacks: route before dbresolver picks a pool
// for reads, observe after every statement; with a router, a query that
// fails on a replica is run again on the primary.
func (p *Plugin) Initialize(db *gorm.DB) error {
	cb := db.Callback()
	regs := []func() error{
		// First of all, before dbresolver's own callback: a statement that
		// names its resolver before dbresolver looks spares it a regular
		// expression over the raw SQL (see OnPrimary).
		func() error { return cb.Query().Before("*").Register("ryw:route", p.route) },
		func() error { return cb.Row().Before("*").Register("ryw:route", p.route) },
		func() error { return cb.Raw().Before("*").Register("ryw:route", p.routeWrite) },
		func() error { return cb.Create().Before("*").Register("ryw:route", p.routeWrite) },
		func() error { return cb.Update().Before("*").Register("ryw:route", p.routeWrite) },
		func() error { return cb.Delete().Before("*").Register("ryw:route", p.routeWrite) },
		func() error { return cb.Query().After("gorm:query").Register("ryw:observe", p.observe) },
		func() error { return cb.Row().After("gorm:row").Register("ryw:observe", p.observe) },
		func() error { return cb.Raw().After("gorm:raw").Register("ryw:observe", p.observe) },
		func() error { return cb.Create().After("gorm:create").Register("ryw:observe", p.observe) },
		func() error { return cb.Update().After("gorm:update").Register("ryw:observe", p.observe) },
		func() error { return cb.Delete().After("gorm:delete").Register("ryw:observe", p.observe) },
	}
	if p.router != nil {
		regs = append(regs,
			func() error { return cb.Query().Replace("gorm:query", p.query) },
			func() error { return cb.Row().Replace("gorm:row", p.row) },
		)
	}
	for _, reg := range regs {
		if err := reg(); err != nil {
			return err
		}
	}
	return nil
}

// route points the statement at the node its context's decision names.
// Adding a dbresolver clause makes dbresolver resolve again, so the order of
// this callback relative to dbresolver's own does not matter (it is what
// db.Clauses(dbresolver.Write) does, applied to every statement). Statements
// inside a transaction stay on the transaction's connection. Without a
// decision, a balancer's statement runs on the primary: when unsure, read
// from the primary.
func (p *Plugin) route(db *gorm.DB) {
	if db.Statement.Context == nil {
		return
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		return
	}
	d, ok := DecisionFrom(db.Statement.Context)
	if !ok {
		if p.router != nil {
			onPrimary(db.Statement)
		}
		return
	}
	if d.OnPrimary() {
		onPrimary(db.Statement)
		p.deadline(db, p.primaryTimeout())
		return
	}
	if m, ok := dbresolver.Use(d.Node).(gorm.StatementModifier); ok {
		m.ModifyStatement(db.Statement)
	}
}

// routeWrite sends a statement that writes (Create, Save, Updates,
// Delete, Exec) to the primary, whatever the decision, within the
// primary's timeout.
func (p *Plugin) routeWrite(db *gorm.DB) {
	if db.Statement.Context == nil {
		return
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		return
	}
	if _, ok := DecisionFrom(db.Statement.Context); ok || p.router != nil {
		onPrimary(db.Statement)
	}
	p.deadline(db, p.primaryTimeout())
}

func (p *Plugin) primaryTimeout() time.Duration {
	if p.router == nil {
		return 0
	}
	return p.router.cfg.PrimaryTimeout
}

// deadline bounds the statement by d, until its request ends (its rows
// may be read after the callbacks return). Outside a request or job
// (nothing to end it), the caller's context alone bounds it.
func (p *Plugin) deadline(db *gorm.DB, d time.Duration) {
	db.Statement.Context = untilDone(db.Statement.Context, d)
}

// replica returns the pool of the replica name.
func (p *Plugin) replica(name string) gorm.ConnPool {
	for pool, n := range p.nodes {
		if n == name {
			return pool
		}
	}
	return p.primary
}

// onReplica reports whether the statement is about to run on a replica
// by its decision (not on a transaction, nor sent to the primary by the
// resolver, as locking reads are), and the decision.
func (p *Plugin) onReplica(db *gorm.DB) (Decision, bool) {
	d, ok := DecisionFrom(db.Statement.Context)
	if !ok || d.OnPrimary() {
		return d, false
	}
	name, known := p.nodes[db.Statement.ConnPool]
	return d, known && name == d.Node
}

// query runs GORM's query callback through Router.Read: on a replica
// within its timeout, and once more on the primary if the replica fails.
func (p *Plugin) query(db *gorm.DB) {
	if _, ok := p.onReplica(db); !ok {
		callbacks.Query(db)
		return
	}
	orig := db.Statement.Context
	err := p.router.Read(orig, func(ctx context.Context) error {
		switch d, _ := DecisionFrom(ctx); {
		case d.OnPrimary():
			// The retry: on the primary, from a clean slate.
			db.Statement.ConnPool = p.primary
			db.Error = nil
		case p.nodes[db.Statement.ConnPool] != d.Node:
			// A session moving to another replica (see Router.Read).
			db.Statement.ConnPool = p.replica(d.Node)
			db.Error = nil
		}
		db.Statement.Context = ctx
		callbacks.Query(db)
		return db.Error
	})
	db.Statement.Context = orig
	db.Error = err
}

// row runs GORM's row callback (Row, Rows, Raw(...).Scan); if the
// statement fails on a replica before any row is read, it runs again on
// the primary. The rows are read after the callback, so they are bounded
// by the replica's statement_timeout, and by its timeout until the
// request ends.
func (p *Plugin) row(db *gorm.DB) {
	d, ok := p.onReplica(db)
	if !ok {
		callbacks.RowQuery(db)
		return
	}
	orig := db.Statement.Context
	// RowQuery consumes the setting that asks for Rows rather than a Row.
	_, rows := db.Statement.Settings.Load("rows")
	p.deadline(db, p.router.cfg.ReplicaTimeout)
	var at *attempt
	db.Statement.Context, at = p.router.tryReplica(db.Statement.Context)
	callbacks.RowQuery(db)
	err := db.Error
	if row, ok := db.Statement.Dest.(*sql.Row); ok && err == nil {
		// Row keeps its error until it is scanned.
		err = row.Err()
	}
	if err == nil || orig.Err() != nil {
		return
	}
	reason, retry, err := p.router.replicaFailed(orig, d, err, errors.Is(err, context.DeadlineExceeded), at)
	if !retry {
		if db.Error != nil {
			db.Error = err
		}
		return
	}
	db.Statement.Context = retryContext(orig, d, reason, err)
	db.Statement.ConnPool = p.primary
	db.Error = nil
	if rows {
		db.Statement.Settings.Store("rows", true)
	}
	p.deadline(db, p.primaryTimeout())
	callbacks.RowQuery(db)
}

// observe records the node whose pool ran the statement.
func (p *Plugin) observe(db *gorm.DB) {
	if db.Statement.Context == nil {
		return
	}
	o := observationFrom(db.Statement.Context)
	if o == nil || (db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound)) {
		return
	}
	pool := db.Statement.ConnPool
	if ps, ok := pool.(*gorm.PreparedStmtDB); ok {
		pool = ps.ConnPool
	}
	if name, ok := p.nodes[pool]; ok {
		o.record(name)
		return
	}
	// Transactions are begun on the primary's pool (dbresolver runs them on
	// the sources), so a statement on a transaction ran on the primary.
	if _, inTx := pool.(gorm.TxCommitter); inTx {
		o.record(Primary)
	}
}
