package ryw

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A replica can show a commit before the primary does. A committing
// backend flushes its commit record, which the WAL senders then stream,
// marks the transaction committed in the commit log, waits for the
// synchronous standbys if there are any, and only then leaves the
// primary's list of running transactions; until it has left, a new
// snapshot on the primary does not show the commit. A replica shows it as
// soon as it has replayed the record. So a client that read from a replica
// and then reads from the primary (its replica restarted or fell behind,
// or time mode sent the read there) may see the primary show less: a
// monotonic-reads regression that no WAL position can rule out, since the
// primary is past every position the replica had replayed.
//
// A primary read of such a client therefore settles first (settleQuery):
// it waits until every transaction that was running when it started has
// left the primary's running list. Among them is any whose commit the
// replica already showed: a transaction that had not flushed its commit
// record yet cannot have been shown. Transactions that run on, uncommitted,
// are waited for only briefly (settleWait): a commit takes less. One whose
// backend waits for the synchronous standbys has committed and is waited
// for longer (at most half of what is left of the read's deadline): a
// synchronous standby that does not answer holds it there, visible on the
// replicas and not on the primary, and the read fails with ErrUnsettled
// rather than go back in time.
//
// What it cannot close: a backend stalled between flushing its commit
// record and leaving the running list, other than in that wait, for longer
// than settleWait, while a replica shows the commit, the client reads it
// there and its next request reaches the primary (see docs/SESSIONS.md).

// ErrUnsettled is the error of a read on the primary that had to wait for
// commits a replica may already have shown the client, and whose wait ran
// out: the primary has committed them but does not show them yet, which
// happens while a synchronous standby does not acknowledge. Answering would
// show the client less than it has seen. It is temporary; the client may
// try again shortly (HTTP 503).
var ErrUnsettled = errors.New("ryw: the primary does not show yet a commit that a replica may already have shown this client (a synchronous standby may not be answering)")

// settleWait is how long a settling read waits for every transaction that
// was running when it started; after it, only for those whose backend
// waits for the synchronous standbys (see settleQuery).
const settleWait = 20 * time.Millisecond

// settleMax bounds the wait for commits the synchronous standbys hold,
// when the read has no deadline.
const settleMax = DefaultPrimaryTimeout / 2

const unsettledPrefix = "ryw: primary unsettled, transactions "

// settleQuery settles the primary for a read that follows reads on a
// replica (see above). It waits until the transactions that were running
// when it started have left the running list: those its snapshot lists as
// running, and those whose IDs were assigned past the snapshot's xmax
// (from the xmax to the next ID to assign, which age() tells; none of them
// had ended). pg_xact_status calls a transaction "in progress" for as long
// as it is in the running list, committed in the commit log or not. After
// $1 milliseconds it waits only for those whose backend waits for the
// synchronous standbys (pg_stat_activity's wait event SyncRep: committed,
// and shown on the replicas); after $2 milliseconds, it fails with an
// error that names them (see settleError). On a direct connection it is
// sent before the read in the read's own transaction, and its failure
// skips the read (through a pooler, see settleQuickQuery). It sleeps on
// the primary between looks: 0.2 ms after the first, 0.2 ms longer after
// each, 10 ms at most. With no transaction running, it looks once.
//
// pg_current_snapshot() returns the statement's snapshot, taken when it
// started. The list is built from it once (MATERIALIZED): inlined, the
// planner built it twice, once for the list and once for its cardinality.
// Planning the statement costs about six times what running it does, so
// direct connections prepare it once (see checkedConn.statement).
//
// pg_stat_activity is read through its function in a select list, after
// pg_stat_clear_snapshot: a function scan in FROM keeps its rows when it
// is scanned again with the same arguments, and a transaction keeps its
// activity snapshot, so each look would see the first one's. A backend's
// wait event is shown to its own role and to pg_read_all_stats only:
// without that grant, the waits of other roles' commits are not seen, and
// those commits are waited for $1 milliseconds only.
const settleQuery = `/* ryw settle */ WITH RECURSIVE c AS MATERIALIZED (SELECT pg_current_snapshot() s),
	x AS MATERIALIZED (SELECT array(SELECT pg_snapshot_xip(c.s) UNION ALL
		SELECT (pg_snapshot_xmax(c.s)::text::bigint + g)::text::xid8 FROM generate_series(0, age(pg_snapshot_xmax(c.s)::xid) - 1) g) xs FROM c),
	w(n, xs, busy) AS (
	SELECT 0, x.xs, cardinality(x.xs) > 0 FROM x
	UNION ALL
	SELECT w.n + 1, s.xs, cardinality(s.xs) > 0 AND (clock_timestamp() < statement_timestamp() + $1::int * interval '1 millisecond' OR EXISTS (
		SELECT 1 FROM (SELECT pg_stat_get_activity(NULL) r FROM (SELECT pg_stat_clear_snapshot()) c) a
		WHERE (a.r).wait_event = 'SyncRep' AND (a.r).backend_xid = ANY (SELECT x::xid FROM unnest(s.xs) x)))
	FROM w, LATERAL pg_sleep(least(0.0002 * (w.n + 1), 0.01)), LATERAL (
		SELECT array(SELECT x FROM unnest(w.xs) x WHERE pg_xact_status(x) = 'in progress') xs) s
	WHERE w.busy AND clock_timestamp() < statement_timestamp() + $2::int * interval '1 millisecond'
) SELECT CASE WHEN NOT busy THEN n::text ELSE ('` + unsettledPrefix + `' || xs::text)::pg_lsn::text END
	FROM (SELECT n, xs, busy FROM w ORDER BY n DESC LIMIT 1) last`

// settleQuickQuery is settleQuery's first look on a connection through a
// pooler, where ryw names no statements and every one is planned: it plans
// at about a seventh of settleQuery's cost. It answers "0" when no
// transaction holds an ID on the primary (its snapshot lists none running,
// and none was assigned past the xmax), which is settleQuery's first look
// finding none; otherwise it fails (see settleBusy), which skips the read,
// and the read is sent again with settleQuery in its pipeline. It is sent
// only in a transaction that holds no ID of its own (a read's implicit
// one, or before BEGIN), from which age() counts.
const settleQuickQuery = `/* ryw settle */ SELECT CASE WHEN pg_snapshot_xmin(s) = pg_snapshot_xmax(s) AND age(pg_snapshot_xmax(s)::xid) = 0 THEN '0'
	ELSE ('` + busyPrefix + `' || s::text)::pg_lsn::text END FROM (SELECT pg_current_snapshot() s OFFSET 0) c`

const busyPrefix = "ryw: primary busy, snapshot "

// settleBusy reports whether err is settleQuickQuery's failure: the
// primary had transactions running.
func settleBusy(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "22P02" && strings.Contains(pgErr.Message, busyPrefix)
}

// settleArgs are settleQuery's parameters for a read with ctx's deadline.
func settleArgs(ctx context.Context) [][]byte {
	most := settleMax
	if d, ok := ctx.Deadline(); ok {
		most = time.Until(d) / 2
	}
	wait := min(settleWait, most)
	return [][]byte{
		[]byte(strconv.FormatInt(wait.Milliseconds(), 10)),
		[]byte(strconv.FormatInt(most.Milliseconds(), 10)),
	}
}

// settleError turns the failure of settleQuery into an error that wraps
// ErrUnsettled, or returns nil for any other error.
func settleError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
		return nil
	}
	i := strings.Index(pgErr.Message, unsettledPrefix)
	if i < 0 {
		return nil
	}
	xids := strings.TrimSuffix(pgErr.Message[i+len(unsettledPrefix):], `"`)
	return fmt.Errorf("%w: transactions %s committed, still running", ErrUnsettled, xids)
}

// Settles counts, in this process, the reads on the primary that settled
// first, those of them that waited for a transaction, and those that
// failed with ErrUnsettled.
var settles, settleWaits, unsettled atomic.Int64

// settleDone counts one settle by its answer (the number of looks after
// the first: more than 0 waited) or its error.
func settleDone(looks string, err error) error {
	switch {
	case err == nil:
		settles.Add(1)
		if looks != "0" {
			settleWaits.Add(1)
		}
		return nil
	case errors.Is(err, ErrUnsettled):
		settles.Add(1)
		settleWaits.Add(1)
		unsettled.Add(1)
	}
	return err
}

// readSettle reads the answer of settleQuery or settleQuickQuery off a
// sent pipeline: busy when the quick look found transactions running, and
// the read after it was skipped. Unless it settled, the pipeline is closed.
func readSettle(p *pgconn.Pipeline) (busy bool, err error) {
	looks, err := pipelinedValue(p, "settle")
	if err == nil {
		return false, settleDone(looks, nil)
	}
	p.Close()
	if settleBusy(err) {
		return true, nil
	}
	if s := settleError(err); s != nil {
		return false, settleDone("", s)
	}
	return false, badConn(err)
}

// settles reports whether a read on this connection must settle first (a
// read on the primary, after the client's reads on a replica; see
// Observation.mustSettle), and the mark to clear once it has.
func (cc *checkedConn) settles(obs *Observation) (bool, int) {
	if cc.replica || obs == nil {
		return false, 0
	}
	return obs.settling()
}

// settle runs settleQuery on its own, before a transaction that obs
// reports to begins on the primary, when it must (see settles); through a
// pooler, settleQuickQuery first, and settleQuery only when the primary is
// busy.
func (cc *checkedConn) settle(ctx context.Context, obs *Observation) error {
	must, gen := cc.settles(obs)
	if !must {
		return nil
	}
	conn := cc.Conn.Conn()
	if conn.IsClosed() {
		return driver.ErrBadConn
	}
	looks, err := cc.execSettle(ctx, conn)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "26000" {
		// Its prepared statement is gone (DISCARD ALL): prepare it again,
		// once.
		cc.forget(ctx, conn, settleQuery)
		looks, err = cc.execSettle(ctx, conn)
	}
	if err != nil {
		if s := settleError(err); s != nil {
			return settleDone("", s)
		}
		return badConn(err)
	}
	obs.settled(gen)
	return settleDone(looks, nil)
}

// execSettle runs settleQuery on its own and returns its answer (see
// settleDone); through a pooler, settleQuickQuery first.
func (cc *checkedConn) execSettle(ctx context.Context, conn *pgx.Conn) (string, error) {
	if cc.pooled {
		// No named statements through a pooler: planned each time.
		looks, err := execValue(conn.PgConn().ExecParams(ctx, settleQuickQuery, nil, nil, nil, nil))
		if !settleBusy(err) {
			return looks, err
		}
		return execValue(conn.PgConn().ExecParams(ctx, settleQuery, settleArgs(ctx), nil, nil, nil))
	}
	sd, err := cc.statement(ctx, conn, settleQuery)
	if err != nil {
		return "", err
	}
	return execValue(conn.PgConn().ExecPrepared(ctx, sd.Name, settleArgs(ctx), nil, nil))
}

// execValue returns the single value of a statement's row ("" when it has
// none), or its error.
func execValue(rr *pgconn.ResultReader) (string, error) {
	var text string
	if rr.NextRow() && len(rr.Values()) == 1 {
		text = string(rr.Values()[0])
	}
	_, err := rr.Close()
	return text, err
}
