package ryw

import (
	"database/sql"
	"errors"
	"fmt"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"
)

// Open returns a GORM handle over the primary and the replicas:
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
	if config == nil {
		config = &gorm.Config{}
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
	if err := db.Use(&Plugin{nodes: nodes}); err != nil {
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
	nodes map[gorm.ConnPool]string // pool -> node name
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return "ryw" }

// Initialize registers the callbacks: route before dbresolver picks a pool
// for reads, observe after every statement.
func (p *Plugin) Initialize(db *gorm.DB) error {
	cb := db.Callback()
	if err := cb.Query().Before("gorm:query").Register("ryw:route", p.route); err != nil {
		return err
	}
	if err := cb.Row().Before("gorm:row").Register("ryw:route", p.route); err != nil {
		return err
	}
	if err := cb.Raw().Before("gorm:raw").Register("ryw:route", p.route); err != nil {
		return err
	}
	for _, reg := range []func() error{
		func() error { return cb.Query().After("gorm:query").Register("ryw:observe", p.observe) },
		func() error { return cb.Row().After("gorm:row").Register("ryw:observe", p.observe) },
		func() error { return cb.Raw().After("gorm:raw").Register("ryw:observe", p.observe) },
		func() error { return cb.Create().After("gorm:create").Register("ryw:observe", p.observe) },
		func() error { return cb.Update().After("gorm:update").Register("ryw:observe", p.observe) },
		func() error { return cb.Delete().After("gorm:delete").Register("ryw:observe", p.observe) },
	} {
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
// inside a transaction stay on the transaction's connection.
func (p *Plugin) route(db *gorm.DB) {
	if db.Statement.Context == nil {
		return
	}
	d, ok := DecisionFrom(db.Statement.Context)
	if !ok {
		return
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		return
	}
	if d.OnPrimary() {
		onPrimary(db.Statement)
		return
	}
	if m, ok := dbresolver.Use(d.Node).(gorm.StatementModifier); ok {
		m.ModifyStatement(db.Statement)
	}
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
