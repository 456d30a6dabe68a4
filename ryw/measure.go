package ryw

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Monotonic reads need, for every read, an upper bound of the position its
// data may reflect: the client's next read must be served at or past it.
// A statement's snapshot is taken when it starts, so a position read on the
// same server after the statement is such a bound: a replica's replay
// position (replay only moves forward), or the primary's insert position
// (a commit's record is inserted before it becomes visible). The position
// query goes in the same round trip as the statement: both are sent
// together in pipeline mode, each followed by its own Sync, so that each
// runs as a transaction of its own (the statement commits before the
// position is read, and a failing position query cannot undo it), and the
// answers are read in order. A position query before the statement would
// give a lower bound only.
//
// Statements inside a transaction are not measured: the position query
// would run inside it. The router then raises the session to the
// primary's position instead (Router.SessionAfter).

// replicaSeenQuery reads, after a statement on a standby, whether it is
// still one; how far it has replayed, or received if that is further (the
// read's upper bound: a commit replayed becomes visible a moment before
// the replay position moves past its record, but never before the record
// was received); and how far it has replayed (what the connection and the
// monitor may take as replayed: received is not). Not its timeline: reading the WAL
// receiver's (pg_stat_wal_receiver) cost a third as much as the read itself
// (BenchmarkMeasuredRead). A replica's position is reported without one,
// and judged as the current timeline's: a floor that errs high (a position
// from a replica still on the old timeline past the switch point makes the
// client wait for the new timeline to pass it, on the primary meanwhile),
// never low; only the count of floors a failover lost misses it.
const replicaSeenQuery = `SELECT pg_is_in_recovery(), GREATEST(pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn())::text, pg_last_wal_replay_lsn()::text`

// primarySeenQuery reads, after a statement on the primary, whether it is
// one, its insert position with the WAL's page and segment sizes (see
// recordEnd), and its timeline.
const primarySeenQuery = `SELECT NOT pg_is_in_recovery(), pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::bigint,
	pg_size_bytes(current_setting('wal_segment_size')), substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)`

// binaryResults are the result types database/sql receives in binary from
// pgx's stdlib driver; every other type comes as text. Measured queries ask
// for the same formats, so that their rows convert to exactly the values
// stdlib.Rows gives.
var binaryResults = map[uint32]bool{
	pgtype.BoolOID: true, pgtype.ByteaOID: true, pgtype.CIDOID: true, pgtype.DateOID: true,
	pgtype.Float4OID: true, pgtype.Float8OID: true, pgtype.Int2OID: true, pgtype.Int4OID: true,
	pgtype.Int8OID: true, pgtype.OIDOID: true, pgtype.TimestampOID: true, pgtype.TimestamptzOID: true,
	pgtype.XIDOID: true,
}

// maxMeasuredStatements bounds the statements a connection keeps prepared
// for measured queries; past it they are deallocated and prepared again as
// needed.
const maxMeasuredStatements = 256

// measuring returns the observation a query must report its position to,
// or nil: a read whose decision asks for it (MeasureSeen), on whichever
// pool runs it (the resolver sends some reads to the primary whatever the
// decision: transactions, locking reads).
//
// A direct replica connection that knows its server's incarnation pins
// the session instead (see check), and measures nothing.
func (cc *checkedConn) measuring(ctx context.Context) *Observation {
	if d, ok := DecisionFrom(ctx); !ok || !d.MeasureSeen {
		return nil
	}
	if cc.replica && !cc.pooled && cc.incarnation != 0 {
		return nil
	}
	return observationFrom(ctx)
}

// queryMeasured runs query, on a direct connection, in one round trip
// with the replay check before it (need > 0: the connection's server must
// have replayed need, see checkedConn.checkFirst) and the position query
// after it (obs set), and returns its rows; the position is read, and
// reported to obs, when the rows are closed.
func (cc *checkedConn) queryMeasured(ctx context.Context, obs *Observation, need LSN, query string, args []driver.NamedValue) (driver.Rows, error) {
	conn := cc.Conn.Conn()
	if conn.IsClosed() {
		return nil, driver.ErrBadConn
	}
	if conn.PgConn().TxStatus() != 'I' {
		obs.unmeasured()
		return cc.Conn.QueryContext(ctx, query, args)
	}
	if cc.pooled {
		return cc.queryPooled(ctx, obs, 0, query, args)
	}
	rows, err := cc.tryMeasured(ctx, conn, obs, need, query, args)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "0A000" || pgErr.Code == "26000") {
		// The schema changed under the prepared statement ("cached plan
		// must not change result type"), or it is gone: prepare it again,
		// once. (A check that passed need not run again.)
		cc.forget(ctx, conn, query)
		cc.forget(ctx, conn, replayCheckDirectQuery)
		cc.forget(ctx, conn, replayWaitQuery)
		cc.forget(ctx, conn, settleQuery)
		if need <= cc.replayed {
			need = 0
		}
		rows, err = cc.tryMeasured(ctx, conn, obs, need, query, args)
	}
	return rows, err
}

func (cc *checkedConn) tryMeasured(ctx context.Context, conn *pgx.Conn, obs *Observation, need LSN, query string, args []driver.NamedValue) (driver.Rows, error) {
	sd, err := cc.statement(ctx, conn, query)
	if err != nil {
		return nil, badConn(err)
	}
	values := make([]any, len(args))
	for i, a := range args {
		values[i] = a.Value
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(conn.TypeMap(), sd, values); err != nil {
		return nil, err
	}
	formats := make([]int16, len(sd.Fields))
	for i, f := range sd.Fields {
		if binaryResults[f.DataTypeOID] {
			formats[i] = 1
		}
	}
	seenQuery := replicaSeenQuery
	if !cc.replica {
		seenQuery = primarySeenQuery
	}
	// Prepared once per connection too: planning them costs more than
	// running them.
	var seen, check *pgconn.StatementDescription
	if obs != nil {
		if seen, err = cc.statement(ctx, conn, seenQuery); err != nil {
			return nil, badConn(err)
		}
	}
	var checkArgs [][]byte
	if need > 0 {
		checkQuery := replayCheckDirectQuery
		checkArgs = [][]byte{[]byte(need.String())}
		if d, ok := DecisionFrom(ctx); ok && d.hopeful {
			checkQuery = replayWaitQuery
			checkArgs = append(checkArgs, []byte(strconv.FormatInt(hopefulWait.Milliseconds(), 10)))
		}
		if check, err = cc.statement(ctx, conn, checkQuery); err != nil {
			return nil, badConn(err)
		}
	}
	var settle *pgconn.StatementDescription
	mustSettle, gen := cc.settles(obs)
	if mustSettle {
		if settle, err = cc.statement(ctx, conn, settleQuery); err != nil {
			return nil, badConn(err)
		}
	}
	started := time.Now()
	p := conn.PgConn().StartPipeline(ctx)
	if check != nil {
		// In the statement's transaction: a check that fails skips it.
		p.SendQueryStatement(check, checkArgs, nil, nil)
	}
	if settle != nil {
		// Likewise: a primary that does not settle in time skips it.
		p.SendQueryStatement(settle, settleArgs(ctx), nil, nil)
	}
	p.SendQueryStatement(sd, eqb.ParamValues, eqb.ParamFormats, formats)
	p.SendPipelineSync()
	if seen != nil {
		p.SendQueryStatement(seen, nil, nil, nil)
		p.SendPipelineSync()
	}
	if err := p.Flush(); err != nil {
		p.Close()
		return nil, badConn(err)
	}
	if check != nil {
		if err := cc.readCheck(ctx, p, need); err != nil {
			return nil, err
		}
	}
	if settle != nil {
		if _, err := readSettle(p); err != nil {
			return nil, err
		}
		obs.settled(gen)
	}
	return cc.statementRows(conn, p, obs, started, seenQuery)
}

// readCheck reads the answer to replayCheckDirectQuery (or
// replayWaitQuery) off a sent pipeline: the replica's replay position, at
// or past need, which the connection keeps (see checkedConn.replayed); or
// the *BehindError that skipped the statement after it. Once the check
// passed, the session is pinned (see check).
func (cc *checkedConn) readCheck(ctx context.Context, p *pgconn.Pipeline, need LSN) error {
	checksRun.Add(1)
	text, err := pipelinedValue(p, "replay check")
	var replayed LSN
	if err == nil {
		if replayed, err = ParseLSN(text); err != nil {
			err = fmt.Errorf("ryw: replay check: %w", err)
		}
	} else if b := behindError(err, need); b != nil {
		replayed, err = b.(*BehindError).Replayed, b
	} else {
		err = badConn(err)
	}
	cc.replayed = max(cc.replayed, replayed)
	if err != nil {
		p.Close()
		return err
	}
	if d, _ := DecisionFrom(ctx); d.MeasureSeen && cc.incarnation != 0 {
		// (checkFirst refused a read pinned to another incarnation.)
		observationFrom(ctx).pinned(d.Node, cc.incarnation)
	}
	return nil
}

// pipelinedValue reads the next result off a sent pipeline: the single
// value of its row ("" when it has none), or its error. what names the
// statement in the error of a result that is not rows.
func pipelinedValue(p *pgconn.Pipeline, what string) (string, error) {
	res, err := p.GetResults()
	if err != nil {
		return "", err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return "", fmt.Errorf("ryw: a pipelined %s returned %T", what, res)
	}
	var text string
	if rr.NextRow() && len(rr.Values()) == 1 {
		text = string(rr.Values()[0])
	}
	_, err = rr.Close()
	return text, err
}

// statementRows reads the statement's result off a sent pipeline and
// returns its rows; the results after it (the position, the Syncs) are
// read when the rows are closed.
func (cc *checkedConn) statementRows(conn *pgx.Conn, p *pgconn.Pipeline, obs *Observation, started time.Time, seenQuery string) (driver.Rows, error) {
	res, err := p.GetResults()
	rr, ok := res.(*pgconn.ResultReader)
	if err != nil || !ok {
		p.Close()
		if err == nil {
			err = fmt.Errorf("ryw: a pipelined query returned %T", res)
		}
		return nil, badConn(err)
	}
	r := &measuredRows{conn: conn, cc: cc, pipeline: p, rr: rr, obs: obs, started: started, seenQuery: seenQuery,
		fields: slices.Clone(rr.FieldDescriptions())}
	// Like stdlib: read the first row now, so that the statement's error
	// is the query's.
	r.preloaded, r.more = true, r.rr.NextRow()
	if !r.more {
		if err := r.finish(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// replayCheckQuery fails, when the replica has not replayed as far as $1,
// with an error that names how far it has (see behindError); else it sets
// ryw.checked to $1 for the rest of the transaction, where the read that
// follows can see it. Sent before a read in the read's own transaction, it
// aborts the read when it fails: the server skips everything up to the
// Sync.
const replayCheckQuery = `SELECT CASE WHEN pg_last_wal_replay_lsn() >= $1::text::pg_lsn THEN set_config('ryw.checked', $1::text, true)
	ELSE ('` + behindPrefix + `' || coalesce(pg_last_wal_replay_lsn()::text, 'none'))::pg_lsn::text END`

// replayCheckDirectQuery is replayCheckQuery for a direct connection,
// which keeps what its server has replayed (see checkedConn.replayed): it
// returns the replay position.
const replayCheckDirectQuery = `SELECT CASE WHEN r >= $1::text::pg_lsn THEN r::text
	ELSE ('` + behindPrefix + `' || coalesce(r::text, 'none'))::pg_lsn::text END FROM pg_last_wal_replay_lsn() r`

// replayWaitQuery is replayCheckDirectQuery for a read sent hopefully to a
// replica that keeps up (see Router.hopeful): one that has not replayed $1
// yet is given up to $2 milliseconds to, checked every millisecond or so,
// before the check fails. It sleeps on the replica, in the read's round
// trip: a replica a few milliseconds behind serves the read rather than
// hand it to the primary, a round trip and a read later.
const replayWaitQuery = `WITH RECURSIVE w(n, r) AS (
	SELECT 0, pg_last_wal_replay_lsn()
	UNION ALL
	SELECT n + 1, pg_last_wal_replay_lsn() FROM w, LATERAL pg_sleep(0.001 + 0 * n)
	WHERE r < $1::text::pg_lsn AND clock_timestamp() < statement_timestamp() + $2::int * interval '1 millisecond'
) SELECT CASE WHEN r >= $1::text::pg_lsn THEN r::text
	ELSE ('` + behindPrefix + `' || coalesce(r::text, 'none'))::pg_lsn::text END FROM (SELECT r FROM w ORDER BY n DESC LIMIT 1) last`

// hopefulWait is how long a replica that keeps up is given to replay what
// a read sent to it hopefully needs (see replayWaitQuery). Tests lengthen
// it.
var hopefulWait = 10 * time.Millisecond

const behindPrefix = "ryw: replica behind at "

// behindError turns the failure of replayCheckQuery into *BehindError,
// or returns nil for any other error.
func behindError(err error, need LSN) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
		return nil
	}
	i := strings.Index(pgErr.Message, behindPrefix)
	if i < 0 {
		return nil
	}
	replayed, _ := ParseLSN(strings.TrimSuffix(pgErr.Message[i+len(behindPrefix):], `"`))
	return &BehindError{Replayed: replayed, Need: need}
}

// queryPooled runs query on a pooled connection as one transaction in one
// round trip, with a single Sync: first, when need is set, the replay
// check (so that the read runs on a server, and a server connection, that
// has replayed need, whichever the pooler chose), or, for a read on the
// primary that must settle, settleQuickQuery; then the statement, then,
// when obs is set, the position query that bounds what it saw. When the
// quick look finds the primary busy, the read is sent again, once, with
// settleQuery in its place: a round trip more. The
// statements are unnamed and their results text, as pgx's
// QueryExecModeExec sends them. The position is read, and reported to obs,
// when the rows are closed.
func (cc *checkedConn) queryPooled(ctx context.Context, obs *Observation, need LSN, query string, args []driver.NamedValue) (driver.Rows, error) {
	rows, busy, err := cc.tryPooled(ctx, obs, need, query, args, true)
	if busy {
		rows, _, err = cc.tryPooled(ctx, obs, need, query, args, false)
	}
	return rows, err
}

// tryPooled is queryPooled's round trip: a read that must settle looks
// first with settleQuickQuery when quick is set (busy: the primary was, and
// the read was skipped), else settles with settleQuery.
func (cc *checkedConn) tryPooled(ctx context.Context, obs *Observation, need LSN, query string, args []driver.NamedValue, quick bool) (_ driver.Rows, busy bool, _ error) {
	conn := cc.Conn.Conn()
	if conn.IsClosed() {
		return nil, false, driver.ErrBadConn
	}
	if obs != nil && conn.PgConn().TxStatus() != 'I' {
		obs.unmeasured()
		obs = nil
	}
	values := make([]any, len(args))
	for i, a := range args {
		values[i] = a.Value
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(conn.TypeMap(), nil, values); err != nil {
		return nil, false, err
	}
	seenQuery := replicaSeenQuery
	if !cc.replica {
		seenQuery = primarySeenQuery
	}
	mustSettle, gen := cc.settles(obs)
	started := time.Now()
	p := conn.PgConn().StartPipeline(ctx)
	if need > 0 {
		p.SendQueryParams(replayCheckQuery, [][]byte{[]byte(need.String())}, nil, nil, nil)
	}
	switch {
	case mustSettle && quick:
		p.SendQueryParams(settleQuickQuery, nil, nil, nil, nil)
	case mustSettle:
		p.SendQueryParams(settleQuery, settleArgs(ctx), nil, nil, nil)
	}
	p.SendQueryParams(query, eqb.ParamValues, nil, eqb.ParamFormats, eqb.ResultFormats)
	if obs != nil {
		p.SendQueryParams(seenQuery, nil, nil, nil, nil)
	}
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		p.Close()
		return nil, false, badConn(err)
	}
	if need > 0 {
		checksRun.Add(1)
		if _, err := pipelinedValue(p, "replay check"); err != nil {
			p.Close()
			if b := behindError(err, need); b != nil {
				return nil, false, b
			}
			return nil, false, badConn(err)
		}
	}
	if mustSettle {
		if busy, err := readSettle(p); err != nil || busy {
			return nil, busy, err
		}
		obs.settled(gen)
	}
	rows, err := cc.statementRows(conn, p, obs, started, seenQuery)
	return rows, false, err
}

// execPooled is queryPooled for a statement run with Exec.
func (cc *checkedConn) execPooled(ctx context.Context, need LSN, query string, args []driver.NamedValue) (driver.Result, error) {
	rows, err := cc.queryPooled(ctx, nil, need, query, args)
	if err != nil {
		return nil, err
	}
	r := rows.(*measuredRows)
	if err := r.finish(); err != nil {
		return nil, err
	}
	return driver.RowsAffected(r.tag.RowsAffected()), nil
}

// statement returns the connection's prepared statement for a measured
// query, preparing it (one round trip, the first time on a connection).
// They are the connection's own, under their own names, apart from pgx's
// statement cache.
func (cc *checkedConn) statement(ctx context.Context, conn *pgx.Conn, query string) (*pgconn.StatementDescription, error) {
	if sd, ok := cc.statements[query]; ok {
		return sd, nil
	}
	if len(cc.statements) >= maxMeasuredStatements {
		// One out for one in (any one: a connection that needs this many
		// statements is not helped by choosing).
		for q := range cc.statements {
			if q != replicaSeenQuery && q != primarySeenQuery && q != replayCheckDirectQuery && q != replayWaitQuery && q != settleQuery {
				cc.forget(ctx, conn, q)
				break
			}
		}
	}
	cc.named++
	sd, err := conn.PgConn().Prepare(ctx, fmt.Sprintf("ryw_measured_%d", cc.named), query, nil)
	if err != nil {
		return nil, err
	}
	if cc.statements == nil {
		cc.statements = map[string]*pgconn.StatementDescription{}
	}
	cc.statements[query] = sd
	return sd, nil
}

// forget deallocates the prepared statement of a measured query.
func (cc *checkedConn) forget(ctx context.Context, conn *pgx.Conn, query string) {
	sd, ok := cc.statements[query]
	if !ok {
		return
	}
	delete(cc.statements, query)
	_ = conn.PgConn().Deallocate(ctx, sd.Name)
}

// badConn is err, or driver.ErrBadConn when nothing reached the server
// (the connection was closed, say): database/sql then retries on another
// connection, as it does for pgx's own statements.
func badConn(err error) error {
	if pgconn.SafeToRetry(err) {
		return driver.ErrBadConn
	}
	return err
}

// measuredRows are the rows of a measured query. Their values are those
// stdlib.Rows gives for the same columns.
type measuredRows struct {
	conn      *pgx.Conn
	cc        *checkedConn
	pipeline  *pgconn.Pipeline
	rr        *pgconn.ResultReader
	fields    []pgconn.FieldDescription // copied: the reader's are reused by the next result
	obs       *Observation              // nil: not measured (a pooled read that only checks)
	tag       pgconn.CommandTag
	replayed  LSN // a replica's replay position, read with the upper bound
	seenQuery string
	started   time.Time
	preloaded bool
	more      bool
	done      bool
	err       error
	names     []string
	values    []func([]byte) (driver.Value, error)
}

func (r *measuredRows) Columns() []string {
	if r.names == nil {
		r.names = make([]string, len(r.fields))
		for i, f := range r.fields {
			r.names[i] = f.Name
		}
	}
	return r.names
}

func (r *measuredRows) Next(dest []driver.Value) error {
	if r.done {
		if r.err != nil {
			return r.err
		}
		return io.EOF
	}
	more := r.more
	if r.preloaded {
		r.preloaded = false
	} else {
		more = r.rr.NextRow()
	}
	if !more {
		if err := r.finish(); err != nil {
			return err
		}
		return io.EOF
	}
	if r.values == nil {
		r.values = valueFuncs(r.conn.TypeMap(), r.fields)
	}
	for i, raw := range r.rr.Values() {
		if raw == nil {
			dest[i] = nil
			continue
		}
		v, err := r.values[i](raw)
		if err != nil {
			return fmt.Errorf("convert field %d failed: %w", i, err)
		}
		dest[i] = v
	}
	return nil
}

func (r *measuredRows) Close() error { return r.finish() }

// finish reads the rest of the statement's rows, then the position, and
// reports it. A position that cannot be read leaves the observation
// unmeasured, which the router makes up for (see Router.SessionAfter).
func (r *measuredRows) finish() error {
	if r.done {
		return r.err
	}
	r.done = true
	tag, stmtErr := r.rr.Close()
	r.tag = tag
	if r.obs == nil {
		// Nothing to measure: the Sync is all that follows.
		if closeErr := r.pipeline.Close(); stmtErr == nil && closeErr != nil {
			stmtErr = closeErr
		}
		if stmtErr != nil {
			r.err = badConn(stmtErr)
		}
		return r.err
	}
	pos, posErr := r.readPosition()
	closeErr := r.pipeline.Close()
	if posErr == nil && closeErr != nil {
		posErr = closeErr
	}
	var pgErr *pgconn.PgError
	if errors.As(posErr, &pgErr) && (pgErr.Code == "0A000" || pgErr.Code == "26000") {
		// The position's statement is gone (DISCARD ALL, say): prepared
		// again next time.
		delete(r.cc.statements, r.seenQuery)
	}
	if stmtErr != nil || posErr != nil {
		r.obs.unmeasured()
	} else {
		r.obs.addSeen(r.cc.name, pos, r.replayed, r.started)
		r.cc.replayed = max(r.cc.replayed, r.replayed)
	}
	if stmtErr != nil {
		r.err = badConn(stmtErr)
	}
	return r.err
}

// readPosition reads the results that follow the statement's: its Sync,
// the position, and the position's Sync.
func (r *measuredRows) readPosition() (Position, error) {
	var row [][]byte
	var got bool
	for {
		res, err := r.pipeline.GetResults()
		if err != nil {
			return Position{}, err
		}
		switch res := res.(type) {
		case *pgconn.PipelineSync:
			if got {
				return r.position(row)
			}
		case *pgconn.ResultReader:
			if res.NextRow() {
				for _, v := range res.Values() {
					row = append(row, slices.Clone(v))
				}
			}
			if _, err := res.Close(); err != nil {
				return Position{}, err
			}
			got = true
		case nil:
			return Position{}, errors.New("no position result")
		}
	}
}

// position reads the position query's row.
func (r *measuredRows) position(row [][]byte) (Position, error) {
	if len(row) < 3 || string(row[0]) != "t" || row[1] == nil {
		return Position{}, errors.New("the node changed role: no position for the read")
	}
	lsn, err := ParseLSN(string(row[1]))
	if err != nil {
		return Position{}, err
	}
	if r.cc.replica {
		// No timeline: see replicaSeenQuery.
		if row[2] == nil {
			return Position{}, errors.New("no replay position")
		}
		if r.replayed, err = ParseLSN(string(row[2])); err != nil {
			return Position{}, err
		}
		return Position{LSN: lsn}, nil
	}
	if len(row) < 5 {
		return Position{}, errors.New("short position row")
	}
	block, err1 := strconv.ParseInt(string(row[2]), 10, 64)
	segment, err2 := strconv.ParseInt(string(row[3]), 10, 64)
	tli, err3 := strconv.ParseInt(string(row[4]), 16, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Position{}, err
	}
	return Position{LSN: recordEnd(lsn, block, segment), Timeline: int(tli)}, nil
}

// ColumnTypeScanType and ColumnTypeDatabaseTypeName answer as stdlib.Rows
// does.
func (r *measuredRows) ColumnTypeScanType(i int) reflect.Type {
	switch r.fields[i].DataTypeOID {
	case pgtype.Float8OID, pgtype.NumericOID:
		return reflect.TypeFor[float64]()
	case pgtype.Float4OID:
		return reflect.TypeFor[float32]()
	case pgtype.Int8OID:
		return reflect.TypeFor[int64]()
	case pgtype.Int4OID:
		return reflect.TypeFor[int32]()
	case pgtype.Int2OID:
		return reflect.TypeFor[int16]()
	case pgtype.BoolOID:
		return reflect.TypeFor[bool]()
	case pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID:
		return reflect.TypeFor[time.Time]()
	case pgtype.ByteaOID:
		return reflect.TypeFor[[]byte]()
	default:
		return reflect.TypeFor[string]()
	}
}

func (r *measuredRows) ColumnTypeDatabaseTypeName(i int) string {
	oid := r.fields[i].DataTypeOID
	if dt, ok := r.conn.TypeMap().TypeForOID(oid); ok {
		return strings.ToUpper(dt.Name)
	}
	return strconv.FormatInt(int64(oid), 10)
}

// valueFuncs converts each column as stdlib.Rows does: booleans, integers,
// floats, bytea, JSON, XML and times as such (database/sql's driver
// values), every other type as its text.
func valueFuncs(m *pgtype.Map, fields []pgconn.FieldDescription) []func([]byte) (driver.Value, error) {
	out := make([]func([]byte) (driver.Value, error), len(fields))
	for i, f := range fields {
		out[i] = valueFunc(m, f.DataTypeOID, f.Format)
	}
	return out
}

func valueFunc(m *pgtype.Map, oid uint32, format int16) func([]byte) (driver.Value, error) {
	switch oid {
	case pgtype.BoolOID:
		return scanAs[bool](m, oid, format, func(v bool) (driver.Value, error) { return v, nil })
	case pgtype.ByteaOID, pgtype.JSONOID, pgtype.JSONBOID, pgtype.XMLOID:
		return scanAs[[]byte](m, oid, format, func(v []byte) (driver.Value, error) { return v, nil })
	case pgtype.CIDOID, pgtype.OIDOID, pgtype.XIDOID:
		return scanAs[pgtype.Uint32](m, oid, format, func(v pgtype.Uint32) (driver.Value, error) { return v.Value() })
	case pgtype.DateOID:
		return scanAs[pgtype.Date](m, oid, format, func(v pgtype.Date) (driver.Value, error) { return v.Value() })
	case pgtype.Float4OID:
		return scanAs[float32](m, oid, format, func(v float32) (driver.Value, error) { return float64(v), nil })
	case pgtype.Float8OID:
		return scanAs[float64](m, oid, format, func(v float64) (driver.Value, error) { return v, nil })
	case pgtype.Int2OID:
		return scanAs[int16](m, oid, format, func(v int16) (driver.Value, error) { return int64(v), nil })
	case pgtype.Int4OID:
		return scanAs[int32](m, oid, format, func(v int32) (driver.Value, error) { return int64(v), nil })
	case pgtype.Int8OID:
		return scanAs[int64](m, oid, format, func(v int64) (driver.Value, error) { return v, nil })
	case pgtype.TimestampOID:
		return scanAs[pgtype.Timestamp](m, oid, format, func(v pgtype.Timestamp) (driver.Value, error) { return v.Value() })
	case pgtype.TimestamptzOID:
		return scanAs[pgtype.Timestamptz](m, oid, format, func(v pgtype.Timestamptz) (driver.Value, error) { return v.Value() })
	default:
		return scanAs[string](m, oid, format, func(v string) (driver.Value, error) { return v, nil })
	}
}

func scanAs[T any](m *pgtype.Map, oid uint32, format int16, value func(T) (driver.Value, error)) func([]byte) (driver.Value, error) {
	var d T
	plan := m.PlanScan(oid, format, &d)
	return func(src []byte) (driver.Value, error) {
		if err := plan.Scan(src, &d); err != nil {
			return nil, err
		}
		return value(d)
	}
}
