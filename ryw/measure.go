package ryw

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
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
// together (pipelined, with one Sync), and the answers are read in order.
// A position query before the statement would give a lower bound only.

// replicaSeenQuery reads, after a statement on a standby, whether it is
// still one, how far it has replayed, and the timeline its WAL receiver
// streams (NULL without a receiver, or for a role without
// pg_read_all_stats).
const replicaSeenQuery = `SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, (SELECT received_tli FROM pg_stat_wal_receiver)`

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
// for measured queries; past it they are all deallocated and prepared again
// as needed.
const maxMeasuredStatements = 256

// measuring returns the observation a query must report its position to,
// or nil: a read whose decision asks for it (MeasureSeen), on the pool of
// the node the decision names.
func (cc *checkedConn) measuring(ctx context.Context) (*Observation, Decision) {
	d, ok := DecisionFrom(ctx)
	if !ok || !d.MeasureSeen || d.OnPrimary() == cc.replica {
		return nil, d
	}
	return observationFrom(ctx), d
}

// queryMeasured sends query and the position query together and returns
// the rows of query; the position is read, and reported to obs, when the
// rows are closed.
func (cc *checkedConn) queryMeasured(ctx context.Context, obs *Observation, d Decision, query string, args []driver.NamedValue) (driver.Rows, error) {
	conn := cc.Conn.Conn()
	if conn.IsClosed() {
		return nil, driver.ErrBadConn
	}
	if cc.prepared >= maxMeasuredStatements {
		if err := conn.DeallocateAll(ctx); err != nil {
			return nil, err
		}
		cc.prepared = 0
	}
	sd, err := conn.Prepare(ctx, query, query)
	if err != nil {
		if pgconn.SafeToRetry(err) {
			return nil, driver.ErrBadConn
		}
		return nil, err
	}
	cc.prepared++
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
	seen := replicaSeenQuery
	if !cc.replica {
		seen = primarySeenQuery
	}
	var batch pgconn.Batch
	batch.ExecStatement(sd, eqb.ParamValues, eqb.ParamFormats, formats)
	batch.ExecParams(seen, nil, nil, nil, nil)
	mrr := conn.PgConn().ExecBatch(ctx, &batch)
	if !mrr.NextResult() {
		err := mrr.Close()
		if err == nil {
			err = errors.New("ryw: a measured query returned no result")
		}
		return nil, err
	}
	r := &measuredRows{conn: conn, mrr: mrr, rr: mrr.ResultReader(), obs: obs, decision: d, replica: cc.replica, cc: cc}
	// Like stdlib: read the first row now, so that the statement's error
	// is the query's, and the columns are known.
	r.preloaded, r.more = true, r.rr.NextRow()
	if !r.more {
		if err := r.finish(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// measuredRows are the rows of a measured query. Their values are those
// stdlib.Rows gives for the same columns.
type measuredRows struct {
	conn      *pgx.Conn
	cc        *checkedConn
	mrr       *pgconn.MultiResultReader
	rr        *pgconn.ResultReader
	obs       *Observation
	decision  Decision
	replica   bool
	preloaded bool
	more      bool
	done      bool
	err       error
	names     []string
	values    []func([]byte) (driver.Value, error)
}

func (r *measuredRows) Columns() []string {
	if r.names == nil {
		fields := r.rr.FieldDescriptions()
		r.names = make([]string, len(fields))
		for i, f := range fields {
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
		r.values = valueFuncs(r.conn.TypeMap(), r.rr.FieldDescriptions())
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
	_, stmtErr := r.rr.Close()
	pos, posErr := r.readPosition()
	closeErr := r.mrr.Close()
	switch {
	case stmtErr != nil:
		r.err = stmtErr
	case closeErr != nil && posErr == nil:
		posErr = closeErr
	}
	if stmtErr != nil || posErr != nil {
		r.obs.unmeasured()
	} else {
		r.obs.addSeen(pos)
		r.cc.replayed = max(r.cc.replayed, pos.LSN)
	}
	if r.err != nil && pgconn.SafeToRetry(r.err) {
		r.err = driver.ErrBadConn
	}
	return r.err
}

func (r *measuredRows) readPosition() (Position, error) {
	if !r.mrr.NextResult() {
		return Position{}, errors.New("no position result")
	}
	rr := r.mrr.ResultReader()
	var row [][]byte
	if rr.NextRow() {
		row = rr.Values()
		row = append([][]byte(nil), row...)
		for i := range row {
			row[i] = append([]byte(nil), row[i]...)
		}
	}
	if _, err := rr.Close(); err != nil {
		return Position{}, err
	}
	if len(row) < 3 || string(row[0]) != "t" || row[1] == nil {
		return Position{}, errors.New("the node changed role: no position for the read")
	}
	lsn, err := ParseLSN(string(row[1]))
	if err != nil {
		return Position{}, err
	}
	p := Position{LSN: lsn, Timeline: r.decision.Timeline}
	if r.replica {
		if row[2] != nil {
			if tli, err := strconv.Atoi(string(row[2])); err == nil {
				p.Timeline = tli
			}
		}
		return p, nil
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
	p.LSN, p.Timeline = recordEnd(lsn, block, segment), int(tli)
	return p, nil
}

// ColumnTypeScanType and ColumnTypeDatabaseTypeName answer as stdlib.Rows
// does.
func (r *measuredRows) ColumnTypeScanType(i int) reflect.Type {
	switch r.rr.FieldDescriptions()[i].DataTypeOID {
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
	oid := r.rr.FieldDescriptions()[i].DataTypeOID
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
