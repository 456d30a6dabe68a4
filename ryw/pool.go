package ryw

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// BehindError means a replica connection was checked before a read and had
// not replayed as far as the read needs.
type BehindError struct {
	Replayed, Need LSN
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("replica has replayed %s, the read needs %s", e.Replayed, e.Need)
}

// PoolOptions size a connection pool.
type PoolOptions struct {
	// Name is the replica's name in the router's decisions: measured reads
	// on the pool report the replica's position under it (Monitor.Saw).
	Name        string
	MaxOpen     int
	MaxIdle     int
	MaxLifetime time.Duration
	MaxIdleTime time.Duration
	// ConnectTimeout bounds opening a connection (0: pgx's default, none
	// unless the URL sets connect_timeout). Connections a Balancer opens
	// ahead of need, at start-up and before a replica rejoins the rotation,
	// have a deadline of their own instead.
	ConnectTimeout time.Duration
	// StatementTimeout sets the sessions' statement_timeout, so that a
	// statement whose client gave up (a deadline only closes the socket)
	// does not run on: 0 leaves the server's setting. Behind a pooler it is
	// not set: PgBouncer refuses it as a startup parameter (see Pooler).
	StatementTimeout time.Duration
	// Pooler says whether a connection pooler may sit between the pool and
	// the node (default PoolerDetect).
	Pooler Pooler
}

// Pooler says whether a connection pooler, such as PgBouncer in
// transaction or session mode, sits between the service and a node.
//
// Behind one, a client connection is not a server connection: consecutive
// transactions may run on different server connections (transaction
// pooling), and the server connection behind a client connection may be
// replaced when the server restarts (both modes). Named prepared
// statements and startup parameters other than a few are refused. A pooled
// connection therefore uses none of them: its statements are sent unnamed
// (pgx's QueryExecModeExec), and the replay check of a replica read runs in
// the same transaction as the read, in one round trip, rather than as a
// statement of its own before it (see docs/CONSISTENCY.md).
type Pooler string

const (
	// PoolerDetect tells, for every new connection, whether it goes
	// through a pooler: a pooler gives the client a process id of its own
	// (PgBouncer's cancel key), not the server's, or refuses a startup
	// parameter. The first connection to a pooled node is opened twice.
	PoolerDetect Pooler = ""
	// PoolerNone says the connections are direct: one that turns out to go
	// through a pooler fails with ErrPooled.
	PoolerNone Pooler = "none"
	// PoolerPresent treats every connection as pooled, without probing.
	PoolerPresent Pooler = "present"
)

// MovedError is the error of a read pinned to a run of a replica
// (Decision.Pin) that the connection's server is not: the replica
// restarted since the client's last read there, and may now show less
// than it showed. Router.Read retries such a read on the primary.
type MovedError struct {
	Node     string
	Pin, Now Incarnation
}

func (e *MovedError) Error() string {
	return fmt.Sprintf("ryw: %s restarted since the session's reads there (run %s, now %s)", e.Node, e.Pin, e.Now)
}

// ErrPooled is the error of a connection that goes through a connection
// pooler although the configuration says there is none (PoolerNone).
var ErrPooled = errors.New("the connection goes through a connection pooler (such as PgBouncer), but the configuration says the nodes are reached directly: set the pooler setting to detect or present")

// OpenPool opens a database/sql pool on pgx for one node, without
// connecting.
//
// For a replica pool, every statement whose context carries a Decision with
// a MinLSN first checks, on the very connection that will run it, that the
// replica has replayed that far; only then is the statement sent. The check
// lives in the driver's query path, not in the pool's connect or reset
// hooks, because database/sql does not run those for every statement: it
// opens connections for waiting requests in the background (without the
// request's context) and hands a fresh connection over without resetting
// it. A direct connection never outlives its server and replay only moves
// forward while the server runs, so a check that passed holds for the
// statement that follows, whose snapshot is taken after it. A replica whose
// known position was overstated (it crashed and is replaying again) thus
// fails the read with *BehindError instead of answering it stale, and
// Router.Read retries it on the primary. A pooled connection may outlive
// its server, so there the check and the statement are one transaction.
func OpenPool(url string, replica bool, o PoolOptions) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	switch o.Pooler {
	case PoolerDetect, PoolerNone, PoolerPresent:
	default:
		return nil, fmt.Errorf("ryw: unknown pooler setting %q", o.Pooler)
	}
	if o.ConnectTimeout > 0 {
		cfg.ConnectTimeout = o.ConnectTimeout
	}
	direct := cfg.Copy()
	if o.StatementTimeout > 0 {
		direct.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
	}
	pooled := cfg.Copy()
	pooled.DefaultQueryExecMode = pgx.QueryExecModeExec
	pooled.StatementCacheCapacity, pooled.DescriptionCacheCapacity = 0, 0
	// Opening a connection ahead of need (see warm) waits as long as its
	// context allows, not ConnectTimeout: no read waits for it, and a
	// server that has just started, on a busy machine, may take longer.
	ahead := direct.Copy()
	ahead.ConnectTimeout = 0
	db := sql.OpenDB(&checkingConnector{
		direct: stdlib.GetConnector(*direct), ahead: stdlib.GetConnector(*ahead), pooledConfig: pooled,
		replica: replica, name: o.Name, pooler: o.Pooler,
	})
	db.SetMaxOpenConns(o.MaxOpen)
	db.SetMaxIdleConns(o.MaxIdle)
	db.SetConnMaxLifetime(o.MaxLifetime)
	db.SetConnMaxIdleTime(o.MaxIdleTime)
	return db, nil
}

// checkingConnector hands out connections that check a read's MinLSN
// before each statement (replicas), and measure the position of reads that
// ask for it (both; see measure.go). It connects with one of two
// configurations: direct (the statement timeout as a startup parameter,
// pgx's cached named statements) or pooled (neither).
type checkingConnector struct {
	direct       driver.Connector
	ahead        driver.Connector // direct, for connections opened ahead of need
	pooledConfig *pgx.ConnConfig
	replica      bool
	name         string
	pooler       Pooler
	// found is set once a connection of the pool went through a pooler:
	// later ones connect pooled straight away.
	found atomic.Bool
}

func (c *checkingConnector) Driver() driver.Driver { return c.direct.Driver() }

func (c *checkingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if c.pooler == PoolerPresent || c.found.Load() {
		return c.open(ctx, true)
	}
	conn, err := c.open(ctx, false)
	if err != nil {
		if !refusedStartup(err) {
			return nil, err
		}
		// PgBouncer refuses statement_timeout as a startup parameter.
		if c.pooler == PoolerNone {
			return nil, fmt.Errorf("ryw: %w (%v)", ErrPooled, err)
		}
		c.found.Store(true)
		return c.open(ctx, true)
	}
	pooled, err := conn.probe(ctx)
	if err != nil {
		conn.Close()
		return nil, badConn(err)
	}
	if !pooled {
		return conn, nil
	}
	conn.Close()
	if c.pooler == PoolerNone {
		return nil, fmt.Errorf("ryw: %w", ErrPooled)
	}
	c.found.Store(true)
	return c.open(ctx, true)
}

func (c *checkingConnector) open(ctx context.Context, pooled bool) (*checkedConn, error) {
	connector := c.direct
	var connected atomic.Bool
	if pooled {
		connector = c.noCancelConnector(ctx, &connected)
	} else if openingAhead(ctx) {
		connector = c.ahead
	}
	conn, err := connector.Connect(ctx)
	connected.Store(true)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("ryw: pgx stdlib returned a %T, not a *stdlib.Conn", conn)
	}
	return &checkedConn{Conn: sc, replica: c.replica, name: c.name, pooled: pooled}, nil
}

// noCancelConnector connects with the pooled configuration, and keeps the
// connection from sending cancel requests once it is open: pgx sends one
// whenever it closes a connection after an error or a deadline, and
// PgBouncer 1.18 can crash on cancel requests from Go clients
// (pgbouncer/pgbouncer#801 and #904, fixed in later versions), taking every
// client of the node with it. A cancel request is a new connection to the
// same address, made with the configuration's DialFunc: after connected is
// set, that dial fails at once. Statements the client gave up on are
// stopped by the role's statement_timeout instead (see Pooler).
func (c *checkingConnector) noCancelConnector(ctx context.Context, connected *atomic.Bool) driver.Connector {
	cfg := c.pooledConfig.Copy()
	if openingAhead(ctx) {
		cfg.ConnectTimeout = 0
	}
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if connected.Load() {
			return nil, errNoCancel
		}
		return dial(ctx, network, addr)
	}
	return stdlib.GetConnector(*cfg)
}

var errNoCancel = errors.New("ryw: no cancel requests through a pooler")

// refusedStartup reports whether err is a server's (or pooler's) refusal
// of a startup parameter: PgBouncer's "unsupported startup parameter".
func refusedStartup(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "unsupported startup parameter")
}

// probe tells whether the connection reaches its server through a
// pooler: the process id the connection was given at start-up (with its
// cancel key) is then the pooler's invention, not the server process's. On
// a replica the same round trip reads the server's incarnation.
func (c *checkedConn) probe(ctx context.Context) (bool, error) {
	pc := c.Conn.Conn().PgConn()
	query := "SELECT pg_backend_pid()"
	if c.replica {
		query = incarnationQuery
	}
	res, err := pc.Exec(internal(ctx), query).ReadAll()
	if err != nil {
		return false, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 1 {
		return false, errors.New("ryw: pg_backend_pid() returned no row")
	}
	row := res[0].Rows[0]
	if c.replica && len(row) == 3 && row[1] != nil && row[2] != nil {
		c.incarnation = incarnationOf(row[1], row[2])
	}
	return string(row[0]) != strconv.FormatUint(uint64(pc.PID()), 10), nil
}

// incarnationQuery reads, besides the backend's process id, what tells one
// run of the server from another: the postmaster's start time, and the
// process id of the startup process, which replays WAL and is started anew
// when the postmaster reinitialises after a crash of any of its processes
// (without restarting itself). A role sees the startup process only with
// pg_read_all_stats (or pg_monitor): without it the run is unknown, and
// the connection's reads are measured rather than pinned. The function
// under pg_stat_activity spares the view's joins.
const incarnationQuery = `SELECT pg_backend_pid(), pg_postmaster_start_time()::text,
	(SELECT pid FROM pg_stat_get_activity(NULL) WHERE backend_type = 'startup' LIMIT 1)`

// incarnationOf hashes a server's start time and startup process id.
func incarnationOf(started, startup []byte) Incarnation {
	h := fnv.New64a()
	h.Write(started)
	h.Write([]byte{0})
	h.Write(startup)
	return Incarnation(max(h.Sum64(), 1))
}

// checkedConn is a pgx connection whose statements check the replay
// position first. Embedding keeps every optional interface of
// *stdlib.Conn (session reset, validation, named values, transactions).
type checkedConn struct {
	*stdlib.Conn
	replica bool
	name    string // the replica's, "" for the primary
	// pooled is set when the connection goes through a pooler: no named
	// statements, and replica reads check in the statement's transaction.
	pooled bool
	// incarnation is the run of the replica server this connection is
	// connected to (0: unknown, or behind a pooler, where the server behind
	// the connection may change). A connection dies with its server's run,
	// so it never changes.
	incarnation Incarnation
	// statements are the measured queries' own prepared statements, by
	// query; named counts the names given.
	statements map[string]*pgconn.StatementDescription
	named      int
	// txWrote is set when a statement of the open transaction wrote.
	txWrote bool
	// replayed is the highest replay position this connection has seen.
	// Replay only moves forward while the server runs, and the connection
	// dies with the server, so a read that needs no more than this is known
	// to be served and skips the check: the round trip is paid only by
	// reads that need more than the connection has seen (a read right after
	// a write, mostly). database/sql hands a connection to one goroutine at
	// a time, so it needs no lock.
	replayed LSN
}

// reached notes, on a replica connection, that the read in ctx got this
// far: to a connection, past the pool's wait and any connect (see
// attempt); and, for a read that reports to the client's session, that
// the request's next read on the primary must settle first (see
// settleQuery).
func (c *checkedConn) reached(ctx context.Context) {
	if c.replica {
		reachReplica(ctx)
		if d, ok := DecisionFrom(ctx); ok && d.MeasureSeen {
			observationFrom(ctx).mustSettle()
		}
	}
}

// notePrimary records, for a request that runs statements on the primary,
// which server they ran on: a write's token must come from the same one
// (see Router.RecordWrite).
func (c *checkedConn) notePrimary(ctx context.Context) {
	if c.replica {
		return
	}
	// Only writes record their position, so only they need it: reads on
	// the primary skip the address.
	if d, ok := DecisionFrom(ctx); !ok || d.Reason != ReasonWrite {
		return
	}
	if obs := observationFrom(ctx); obs != nil {
		obs.ranOnPrimary(serverOf(c.Conn.Conn()))
	}
}

// serverOf names the server a connection is connected to.
func serverOf(c *pgx.Conn) string {
	if c == nil || c.IsClosed() {
		return ""
	}
	if nc := c.PgConn().Conn(); nc != nil {
		return nc.RemoteAddr().String()
	}
	return ""
}

func (c *checkedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.reached(ctx)
	args, err := c.pooledArgs(args)
	if err != nil {
		return nil, err
	}
	if need := c.pooledCheck(ctx); need > 0 {
		// The check and the statement in one transaction: see Pooler.
		return c.queryPooled(ctx, c.measuring(ctx), need, query, args)
	}
	need, err := c.checkFirst(ctx)
	if err != nil {
		return nil, err
	}
	c.notePrimary(ctx)
	if !c.writes(ctx, query) {
		if obs := c.measuring(ctx); obs != nil || need > 0 {
			return c.queryMeasured(ctx, obs, need, query, args)
		}
		return c.Conn.QueryContext(ctx, query, args)
	}
	if obs := c.measuring(ctx); obs != nil {
		// Not measured: the session is raised to the primary's position
		// instead (see Router.SessionAfter).
		obs.unmeasured()
	}
	// A statement that writes and returns rows (INSERT ... RETURNING):
	// its failure may only show while the rows are read.
	rows, err := c.Conn.QueryContext(ctx, query, args)
	if err != nil {
		c.noteWrite(ctx, err)
		return nil, err
	}
	sr, ok := rows.(*stdlib.Rows)
	if !ok {
		c.noteWrite(ctx, nil)
		return rows, nil
	}
	return &writeRows{Rows: sr, conn: c, ctx: ctx}, nil
}

func (c *checkedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.reached(ctx)
	args, err := c.pooledArgs(args)
	if err != nil {
		return nil, err
	}
	if need := c.pooledCheck(ctx); need > 0 {
		if obs := c.measuring(ctx); obs != nil {
			obs.unmeasured()
		}
		return c.execPooled(ctx, need, query, args)
	}
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	c.notePrimary(ctx)
	if obs := c.measuring(ctx); obs != nil {
		// Not measured: the session is raised to the primary's position
		// instead (see Router.SessionAfter).
		obs.unmeasured()
	}
	res, err := c.Conn.ExecContext(ctx, query, args)
	if !c.replica {
		c.noteWrite(ctx, err)
	}
	return res, err
}

// BeginTx checks before BEGIN: in a REPEATABLE READ or SERIALIZABLE
// transaction the first statement takes the snapshot the whole transaction
// reads, before it evaluates anything, so a check inside it would come too
// late. (The statements inside check again; that is harmless.)
func (c *checkedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.reached(ctx)
	if need := c.pooledCheck(ctx); need > 0 && opts.Isolation > driver.IsolationLevel(sql.LevelReadCommitted) {
		// A snapshot taken by the transaction's first statement cannot be
		// checked from inside it, nor, through a pooler, from before it: a
		// read that needs both goes to the primary.
		return nil, &BehindError{Need: need}
	}
	// Pooled and READ COMMITTED: every statement inside checks itself.
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	c.notePrimary(ctx)
	if obs := c.measuring(ctx); obs != nil {
		// The statements inside a transaction are not measured: the
		// session is raised to the primary's position instead.
		obs.unmeasured()
		if err := c.settle(ctx, obs); err != nil {
			return nil, err
		}
	}
	c.txWrote = false
	tx, err := c.Conn.BeginTx(ctx, opts)
	if err != nil || c.replica || opts.ReadOnly || observationFrom(ctx) == nil {
		return tx, err
	}
	return &writeTx{Tx: tx, conn: c, ctx: ctx}, nil
}

// Writes on the primary are noted in the request's Observation, so that
// they are recorded before the response goes out (see Job.Finish): a
// statement executed with Exec, one that returns rows but is not a plain
// read (INSERT ... RETURNING, a data-modifying WITH), and the commit of a
// transaction that was not read-only. Statements inside a transaction
// count at its commit, which is when they take effect. A write that fails
// so that it may have committed (see MayHaveCommitted) is noted too, as
// unknown. The balancer's own statements (positions, the fence) are not
// the request's writes.

// writes reports whether query, about to run on this connection, is to be
// noted as a write once it has run.
func (c *checkedConn) writes(ctx context.Context, query string) bool {
	if c.replica || observationFrom(ctx) == nil {
		return false
	}
	return ctx.Value(writesKey{}) != nil || !plainRead(query)
}

// writesKey marks a statement that a replica refused as a write (SQLSTATE
// 25006), retried on the primary: whatever its text, it writes.
type writesKey struct{}

// noteWrite notes a write that ran with the result err, unless it ran
// inside a transaction (its commit is noted instead).
func (c *checkedConn) noteWrite(ctx context.Context, err error) {
	if c.Conn.Conn().PgConn().TxStatus() == 'I' {
		c.noteCommit(ctx, err)
		return
	}
	// Inside a transaction: its commit is a write only if a statement of
	// it wrote (a transaction of reads is none).
	c.txWrote = true
}

// noteCommit notes a write that took effect, or may have, with the result
// err.
func (c *checkedConn) noteCommit(ctx context.Context, err error) {
	obs := observationFrom(ctx)
	if obs == nil || ctx.Value(internalKey{}) != nil {
		return
	}
	switch {
	case err == nil:
		obs.wrote(false)
	case MayHaveCommitted(err) && !errors.Is(err, driver.ErrBadConn):
		// (ErrBadConn: nothing reached the server.)
		obs.wrote(true)
	default:
		return
	}
	obs.ranOnPrimary(serverOf(c.Conn.Conn()))
}

// plainRead reports whether query certainly does not write: it starts
// with SELECT, SHOW, VALUES or TABLE. Anything else that returns rows on
// the primary is taken as a write; a function that writes, called from a
// SELECT, is not seen (run it with Exec, or in a transaction).
func plainRead(query string) bool {
	q := skipComments(query)
	for _, kw := range [...]string{"select", "show", "values", "table"} {
		if len(q) > len(kw) && strings.EqualFold(q[:len(kw)], kw) {
			switch q[len(kw)] {
			case ' ', '\t', '\r', '\n', '(', '*':
				return true
			}
		}
	}
	return false
}

// skipComments returns query without its leading white space, opening
// parentheses and comments: sqlc starts every query with "-- name: ...".
// A comment it cannot skip (unterminated, or nested /* /* */ */) leaves
// the query taken as a write, the safe side.
func skipComments(query string) string {
	q := query
	for {
		q = strings.TrimLeft(q, " \t\r\n(")
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/")
			if i < 0 {
				return ""
			}
			q = q[i+2:]
		default:
			return q
		}
	}
}

// internalKey marks the balancer's own statements on the primary.
type internalKey struct{}

func internal(ctx context.Context) context.Context {
	return context.WithValue(ctx, internalKey{}, true)
}

// writeRows are the rows of a statement that writes: reading them tells
// whether it failed, and how.
type writeRows struct {
	*stdlib.Rows
	conn  *checkedConn
	ctx   context.Context
	noted bool
}

func (r *writeRows) Next(dest []driver.Value) error {
	err := r.Rows.Next(dest)
	if err != nil && !r.noted {
		r.noted = true
		failed := err
		if err == io.EOF {
			failed = nil // the end of the rows: it ran
		}
		r.conn.noteWrite(r.ctx, failed)
	}
	return err // io.EOF stays io.EOF, or database/sql reads the last row twice
}

func (r *writeRows) Close() error {
	err := r.Rows.Close()
	if !r.noted {
		r.noted = true
		r.conn.noteWrite(r.ctx, err)
	}
	return err
}

// writeTx notes its commit as a write.
type writeTx struct {
	driver.Tx
	conn *checkedConn
	ctx  context.Context
}

func (t *writeTx) Commit() error {
	err := t.Tx.Commit()
	if t.conn.txWrote {
		t.conn.txWrote = false
		t.conn.noteCommit(t.ctx, err)
	}
	return err
}

func (t *writeTx) Rollback() error {
	t.conn.txWrote = false
	return t.Tx.Rollback()
}

func (c *checkedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.reached(ctx)
	if c.pooled {
		// A named statement lives on one server connection, which a pooler
		// does not keep for us: the statement is sent unnamed each time.
		return &pooledStmt{conn: c, query: query}, nil
	}
	st, err := c.Conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &checkedStmt{Stmt: st, conn: c, query: query}, nil
}

// checkedStmt is a prepared statement (GORM's PrepareStmt mode) that checks
// the replay position before each execution, like checkedConn.
type checkedStmt struct {
	driver.Stmt
	conn  *checkedConn
	query string
}

func (s *checkedStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	s.conn.reached(ctx)
	need, err := s.conn.checkFirst(ctx)
	if err != nil {
		return nil, err
	}
	s.conn.notePrimary(ctx)
	writes := s.conn.writes(ctx, s.query)
	if obs := s.conn.measuring(ctx); (obs != nil || need > 0) && !writes {
		return s.conn.queryMeasured(ctx, obs, need, s.query, args)
	} else if obs != nil {
		obs.unmeasured()
	}
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if writes {
		// Noted as soon as it ran (prepared statements are rare here).
		s.conn.noteWrite(ctx, err)
	}
	return rows, err
}

func (s *checkedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	s.conn.reached(ctx)
	if err := s.conn.check(ctx); err != nil {
		return nil, err
	}
	s.conn.notePrimary(ctx)
	if obs := s.conn.measuring(ctx); obs != nil {
		obs.unmeasured()
	}
	res, err := s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
	if !s.conn.replica {
		s.conn.noteWrite(ctx, err)
	}
	return res, err
}

// pooledStmt is a prepared statement on a pooled connection: only its
// text is kept, and each execution sends it unnamed, through the
// connection's checks.
type pooledStmt struct {
	conn  *checkedConn
	query string
}

func (s *pooledStmt) Close() error  { return nil }
func (s *pooledStmt) NumInput() int { return -1 }

func (s *pooledStmt) Exec(args []driver.Value) (driver.Result, error) {
	return nil, errors.New("ryw: Exec without a context")
}

func (s *pooledStmt) Query(args []driver.Value) (driver.Rows, error) {
	return nil, errors.New("ryw: Query without a context")
}

func (s *pooledStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.conn.QueryContext(ctx, s.query, args)
}

func (s *pooledStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.conn.ExecContext(ctx, s.query, args)
}

// pooledArgs converts, on a pooled connection, the arguments that
// implement driver.Valuer to their values, as database/sql does for other
// drivers. Unnamed statements carry no parameter types, so pgx encodes
// each argument by its Go type alone, in text, and a type it knows only
// with the column's (a uuid.UUID is a [16]byte) would fail.
func (c *checkedConn) pooledArgs(args []driver.NamedValue) ([]driver.NamedValue, error) {
	if !c.pooled {
		return args, nil
	}
	var out []driver.NamedValue
	for i, a := range args {
		if _, ok := a.Value.(driver.Valuer); !ok {
			continue
		}
		if out == nil {
			out = slices.Clone(args)
		}
		v, err := driver.DefaultParameterConverter.ConvertValue(a.Value)
		if err != nil {
			return nil, fmt.Errorf("ryw: argument %d: %w", a.Ordinal, err)
		}
		out[i].Value = v
	}
	if out == nil {
		return args, nil
	}
	return out, nil
}

// pooledCheck is the position a statement on this pooled replica
// connection must check, in its own transaction, before it reads: 0 when
// there is none (or the connection is direct, and check does it).
func (cc *checkedConn) pooledCheck(ctx context.Context) LSN {
	if !cc.pooled || !cc.replica {
		return 0
	}
	d, ok := DecisionFrom(ctx)
	if !ok || d.MinLSN == 0 || d.OnPrimary() {
		return 0
	}
	return d.MinLSN
}

// checksRun counts the replay checks that went to a server.
var checksRun atomic.Int64

// ReplayChecks is how many replay checks replica pools have sent to a
// server in this process: reads whose connection had not already seen the
// replica replay past what they needed (the rest cost no round trip).
func ReplayChecks() int64 { return checksRun.Load() }

// check makes sure the connection's server has replayed the MinLSN of the
// decision in ctx, asking it only when what the connection has already
// seen does not settle it.
//
// A read that reports to the client's session (MeasureSeen) is pinned
// instead of measured on a replica connection that knows its server's
// incarnation: it fails with *MovedError if the decision pins another
// incarnation, and records its own in the request's Observation once the
// check passed.
func (cc *checkedConn) check(ctx context.Context) error {
	d, ok := DecisionFrom(ctx)
	if !ok || !cc.replica || cc.pooled || d.OnPrimary() {
		return nil
	}
	pin, err := cc.pins(d)
	if err != nil {
		return err
	}
	if err := cc.checkReplay(ctx, d); err != nil {
		return err
	}
	if pin {
		observationFrom(ctx).pinned(d.Node, cc.incarnation)
	}
	return nil
}

// checkFirst is check for a read that can carry the replay check in its
// own round trip (see checkedConn.queryMeasured): when the check needs the
// server, it returns the position to check instead of asking; else 0.
// Inside a transaction, or on a pooled connection, it is check.
func (cc *checkedConn) checkFirst(ctx context.Context) (need LSN, err error) {
	d, ok := DecisionFrom(ctx)
	if !ok || !cc.replica || cc.pooled || d.OnPrimary() || d.MinLSN <= cc.replayed ||
		cc.Conn.Conn().IsClosed() || cc.Conn.Conn().PgConn().TxStatus() != 'I' {
		return 0, cc.check(ctx)
	}
	if _, err := cc.pins(d); err != nil {
		return 0, err
	}
	return d.MinLSN, nil
}

// pins reports whether a read of d on this replica connection pins the
// client's session (see check), and fails it with *MovedError when the
// decision pins another incarnation.
func (cc *checkedConn) pins(d Decision) (bool, error) {
	pin := d.MeasureSeen && cc.incarnation != 0
	if pin && d.Pin != 0 && d.Pin != cc.incarnation {
		return pin, &MovedError{Node: d.Node, Pin: d.Pin, Now: cc.incarnation}
	}
	return pin, nil
}

func (cc *checkedConn) checkReplay(ctx context.Context, d Decision) error {
	if d.MinLSN == 0 || d.MinLSN <= cc.replayed {
		return nil
	}
	checksRun.Add(1)
	c := cc.Conn.Conn()
	// Like pgx's own statements: a connection already closed, or an error
	// before anything reached the server, is a bad connection, and
	// database/sql retries on another one.
	if c.IsClosed() {
		return driver.ErrBadConn
	}
	var text *string
	if err := c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&text); err != nil {
		return badConn(err)
	}
	if text == nil {
		return &BehindError{Need: d.MinLSN}
	}
	lsn, err := ParseLSN(*text)
	if err != nil {
		return err
	}
	cc.replayed = max(cc.replayed, lsn)
	if lsn < d.MinLSN {
		return &BehindError{Replayed: lsn, Need: d.MinLSN}
	}
	return nil
}

// PrimaryWAL reads the primary's WAL position and keeps the fence (see
// RaiseFence) there.
type PrimaryWAL struct {
	DB *sql.DB
}

// CurrentLSN returns the primary's WAL insert position. Taken after a commit
// returned, it is at or past that commit's record whatever
// synchronous_commit is: the record was inserted before the commit
// returned, while with synchronous_commit = off it may not be written or
// flushed yet (pg_current_wal_lsn, the write position, can then be short of
// it). A replica that has replayed this position shows the write. Nothing
// about the session, the role or the server's configuration can make the
// token too low, so none of it needs policing.
func (w PrimaryWAL) CurrentLSN(ctx context.Context) (LSN, error) {
	ctx = internal(ctx)
	var text string
	var block, segment int64
	if err := w.DB.QueryRowContext(ctx, currentLSNQuery).Scan(&text, &block, &segment); err != nil {
		return 0, err
	}
	lsn, err := ParseLSN(text)
	if err != nil {
		return 0, err
	}
	return recordEnd(lsn, block, segment), nil
}

// CurrentPosition is CurrentLSN with the primary's system identifier and
// timeline, in one query.
// It also names the server it read it on.
func (w PrimaryWAL) CurrentPosition(ctx context.Context) (Position, string, error) {
	ctx = internal(ctx)
	conn, err := w.DB.Conn(ctx)
	if err != nil {
		return Position{}, "", err
	}
	defer conn.Close()
	var server string
	_ = conn.Raw(func(dc any) error {
		if c, ok := dc.(interface{ Conn() *pgx.Conn }); ok {
			server = serverOf(c.Conn())
		}
		return nil
	})
	var text, system, tli string
	var block, segment int64
	if err := conn.QueryRowContext(ctx, currentPositionQuery).Scan(&text, &block, &segment, &system, &tli); err != nil {
		return Position{}, "", err
	}
	lsn, err := ParseLSN(text)
	if err != nil {
		return Position{}, "", err
	}
	t, err := strconv.ParseInt(tli, 16, 64)
	if err != nil {
		return Position{}, "", err
	}
	return Position{System: system, Timeline: int(t), LSN: recordEnd(lsn, block, segment)}, server, nil
}

// History reads where each ancestor of timeline ended.
func (w PrimaryWAL) History(ctx context.Context, timeline int) (map[int]LSN, error) {
	return readHistory(ctx, w.DB, timeline)
}

const currentPositionQuery = `SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::bigint, pg_size_bytes(current_setting('wal_segment_size')),
	(SELECT system_identifier FROM pg_control_system())::text, substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)`

// currentLSNQuery reads the insert position with the WAL's page and segment
// sizes (fixed when the cluster was built), for recordEnd.
const currentLSNQuery = `SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::bigint, pg_size_bytes(current_setting('wal_segment_size'))`

// recordEnd turns an insert position into the end of the last record before
// it, the form replicas report their replay in. They differ only when the
// last record ended at a page boundary: the insert position then points past
// the next page's header (24 bytes, or 40 at the start of a segment), where
// no record can end, and a replica that has replayed everything would never
// reach it until the next record is written.
func recordEnd(insert LSN, block, segment int64) LSN {
	const shortHeader, longHeader = 24, 40
	switch {
	case segment > 0 && uint64(insert)%uint64(segment) == longHeader:
		return insert - longHeader
	case block > 0 && uint64(insert)%uint64(block) == shortHeader && (segment <= 0 || uint64(insert)%uint64(segment) != shortHeader):
		return insert - shortHeader
	}
	return insert
}
