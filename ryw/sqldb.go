package ryw

import (
	"context"
	"database/sql"
	"errors"
)

// DB is the balancer's handle for database/sql code. Its methods fit the
// DBTX interface that sqlc generates (ExecContext, PrepareContext,
// QueryContext, QueryRowContext), so generated queries take it as they
// are: New(balancer.SQL()).
//
// Each call is routed by the decision in its context (see Middleware and
// Balancer.Begin). Queries run on the node it names: on a replica, after
// the connection has checked the replica's replay position, and once more
// on the primary if the replica fails before answering (an error met
// while the rows are read is returned as it is). Exec, Prepare and
// transactions run on the primary, and their writes are noted for the
// request. A call whose context carries no decision runs on the primary.
type DB struct {
	b *Balancer
}

// pool returns the pool the context's decision names, and the decision
// if it is a replica's.
func (db *DB) pool(ctx context.Context) (*sql.DB, Decision, bool) {
	d, ok := DecisionFrom(ctx)
	if !ok || d.OnPrimary() {
		return db.b.primary, d, false
	}
	if p := db.b.replica(d.Node); p != nil {
		return p, d, true
	}
	return db.b.primary, d, false
}

// QueryContext runs a query on the node the context's decision names.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	p, d, replica := db.pool(ctx)
	qctx, at := db.attempt(ctx, replica)
	rows, err := p.QueryContext(qctx, query, args...)
	if err == nil || !replica || ctx.Err() != nil {
		served(ctx, d, replica, err)
		return rows, err
	}
	reason, retry, err := db.b.router.replicaFailed(ctx, d, err, errors.Is(err, context.DeadlineExceeded), at)
	if !retry {
		return nil, err
	}
	ctx = retryContext(ctx, d, reason, err)
	rows, err = db.b.primary.QueryContext(db.deadline(ctx, false), query, args...)
	served(ctx, d, false, err)
	return rows, err
}

// served records, for X-Served-By, the node that ran a statement without
// an error.
func served(ctx context.Context, d Decision, replica bool, err error) {
	if err != nil {
		return
	}
	node := Primary
	if replica {
		node = d.Node
	}
	observationFrom(ctx).record(node)
}

// QueryRowContext runs a query that returns at most one row on the node
// the context's decision names.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	p, d, replica := db.pool(ctx)
	qctx, at := db.attempt(ctx, replica)
	row := p.QueryRowContext(qctx, query, args...)
	err := row.Err()
	if err == nil || !replica || ctx.Err() != nil {
		served(ctx, d, replica, err)
		return row
	}
	// (A *sql.Row keeps its own error: a read shed for overload fails
	// with its deadline's.)
	reason, retry, _ := db.b.router.replicaFailed(ctx, d, err, errors.Is(err, context.DeadlineExceeded), at)
	if !retry {
		return row
	}
	ctx = retryContext(ctx, d, reason, err)
	row = db.b.primary.QueryRowContext(db.deadline(ctx, false), query, args...)
	served(ctx, d, false, row.Err())
	return row
}

// ExecContext runs a statement on the primary.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = primaryContext(ctx)
	ctx, cancel := db.timeout(ctx)
	defer cancel()
	res, err := db.b.primary.ExecContext(ctx, query, args...)
	served(ctx, Decision{}, false, err)
	return res, err
}

// PrepareContext prepares a statement on the primary: its executions run
// there.
func (db *DB) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return db.b.primary.PrepareContext(primaryContext(ctx), query)
}

// BeginTx begins a transaction on the primary. Its commit is noted as the
// request's write (unless opts asks for a read-only transaction).
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	return db.b.primary.BeginTx(primaryContext(ctx), opts)
}

// primaryContext keeps the request's observation but makes the decision
// the primary's, so that the connection does not check a replica
// position on it.
func primaryContext(ctx context.Context) context.Context {
	d, ok := DecisionFrom(ctx)
	if !ok || d.OnPrimary() {
		return ctx
	}
	return WithDecision(ctx, Decision{Node: Primary, Reason: d.Reason})
}

// deadline bounds a query by the node's timeout until its request ends
// (its rows are read after the call returns). Outside a request or job,
// the caller's context alone bounds it.
func (db *DB) deadline(ctx context.Context, replica bool) context.Context {
	if replica {
		return untilDone(ctx, db.b.cfg.ReplicaTimeout)
	}
	return untilDone(ctx, db.b.cfg.PrimaryTimeout)
}

// attempt is deadline, for a replica with the read's attempt (see
// Router.tryReplica).
func (db *DB) attempt(ctx context.Context, replica bool) (context.Context, *attempt) {
	ctx = db.deadline(ctx, replica)
	if !replica {
		return ctx, nil
	}
	return db.b.router.tryReplica(ctx)
}

// timeout bounds a statement that completes within the call.
func (db *DB) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if observationFrom(ctx) == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, db.b.cfg.PrimaryTimeout)
}

// retryContext is the context of a read retried on the primary after it
// failed on the replica d named with err; a statement the replica refused
// as a write is the request's write.
func retryContext(ctx context.Context, d Decision, reason Reason, err error) context.Context {
	ctx = WithDecision(ctx, Decision{Node: Primary, Reason: reason, MeasureSeen: d.MeasureSeen})
	if isReadOnly(err) {
		ctx = context.WithValue(ctx, writesKey{}, true)
	}
	return ctx
}
