package ryw_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ryw-go/ryw/ryw"
)

// TestATransactionOnThePrimarySettlesBeforeBEGIN: a read-only transaction
// on the primary, in a request whose client read from a replica, settles
// before BEGIN (its statements are not pipelined with a settle). A
// synchronous standby that does not exist holds an update after its
// commit record: replicas may show it, the primary does not. Control: a
// transaction without the mark reads the old value. With the mark, BEGIN
// fails with ErrUnsettled while the commit is held, and, released while it
// waits, the transaction reads the new value.
func TestATransactionOnThePrimarySettlesBeforeBEGIN(t *testing.T) {
	needStack(t)
	ctx := context.WithoutCancel(t.Context())
	table := newTable(t)
	if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ('k', 'v1')"); err != nil {
		t.Fatal(err)
	}
	setStandbys := func(value string) {
		t.Helper()
		if err := stack.Primary.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = '"+value+"'"); err != nil {
			t.Fatal(err)
		}
		if err := stack.Primary.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	setStandbys("ryw_absent_standby")
	t.Cleanup(func() { setStandbys("") })
	waitUntil(t, func() bool {
		var v string
		return stack.Primary.QueryRow(ctx, []any{&v}, "SHOW synchronous_standby_names") == nil && v == "ryw_absent_standby"
	})
	held := make(chan error, 1)
	go func() { held <- stack.Primary.Exec(ctx, "UPDATE "+table+" SET v = 'v2'") }()
	waitUntil(t, func() bool { return count(t, "wait_event = 'SyncRep'") > 0 })

	pool, err := ryw.OpenPool(stack.ClientURL(stack.Primary), false, ryw.PoolOptions{MaxOpen: 2, MaxIdle: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	read := func(mark bool) (string, error) {
		rctx := ryw.WithDecision(ctx, ryw.Decision{Node: ryw.Primary, MeasureSeen: true})
		rctx, _ = ryw.WithObservation(rctx)
		if mark {
			ryw.MustSettle(rctx)
		}
		rctx, cancel := context.WithTimeout(rctx, 2*time.Second)
		defer cancel()
		tx, err := pool.BeginTx(rctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return "", err
		}
		defer tx.Rollback()
		var v string
		err = tx.QueryRowContext(rctx, "SELECT v FROM "+table+" WHERE k = 'k'").Scan(&v)
		return v, err
	}
	if v, err := read(false); err != nil || v != "v1" {
		t.Fatalf("control, no mark: %q, %v; want v1 (the primary does not show the held commit)", v, err)
	}
	if v, err := read(true); !errors.Is(err, ryw.ErrUnsettled) {
		t.Fatalf("marked, the commit held: %q, %v; want ErrUnsettled", v, err)
	}
	type answer struct {
		v   string
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		v, err := read(true)
		answered <- answer{v, err}
	}()
	waitUntil(t, func() bool { return count(t, "state = 'active' AND query LIKE '/* ryw settle */%'") > 0 })
	setStandbys("")
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if a := <-answered; a.err != nil || a.v != "v2" {
		t.Fatalf("marked, released while it waited: %q, %v; want v2", a.v, a.err)
	}
}

// count counts the primary's backends that match where (pg_stat_activity).
func count(t *testing.T, where string) int {
	t.Helper()
	var n int
	if err := stack.Primary.QueryRow(t.Context(), []any{&n}, "SELECT count(*) FROM pg_stat_activity WHERE "+where); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTheSettlePlansItsListOnce: the settle builds its list of running
// transactions once. Inlined, the planner built it twice (once for the
// list, once for its cardinality), each time calling pg_snapshot_xip.
// Read from the plan the primary makes of the statement, with the prepared
// statement's generic parameters. Control: the same statement with its
// CTEs not materialized plans the list twice.
func TestTheSettlePlansItsListOnce(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	conn, err := stack.Primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	calls := func(name, query string) int {
		t.Helper()
		if _, err := conn.Exec(ctx, "PREPARE "+name+"(int, int) AS "+query); err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN (VERBOSE) EXECUTE "+name+"(20, 100)")
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(strings.Join(plan, "\n"), "pg_snapshot_xip(")
	}
	if n := calls("ryw_settle", ryw.SettleQuery); n != 1 {
		t.Fatalf("the settle's plan builds its list %d times, want 1", n)
	}
	inlined := strings.Replace(ryw.SettleQuery, "c AS MATERIALIZED", "c AS NOT MATERIALIZED", 1)
	inlined = strings.Replace(inlined, "x AS MATERIALIZED", "x AS NOT MATERIALIZED", 1)
	if inlined == ryw.SettleQuery {
		t.Fatal("control: the settle's CTEs are not where the test expects them")
	}
	if n := calls("ryw_settle_inlined", inlined); n < 2 {
		t.Fatalf("control: the settle inlined builds its list %d times, want more than once", n)
	}
}

// TestTheQuickSettleSeesRunningTransactions: the settle's first look
// through a pooler passes when no transaction holds an ID on the primary,
// and fails as busy while one does (here a write not yet committed), so
// that the read settles in full: the write's ID past the snapshot's xmax,
// then, once a later transaction committed, in its running list.
func TestTheQuickSettleSeesRunningTransactions(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	look := func() error {
		t.Helper()
		conn, err := stack.Primary.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var v string
		err = conn.QueryRow(ctx, ryw.SettleQuickQuery).Scan(&v)
		if err == nil && v != "0" {
			t.Fatalf("the quick settle answered %q, want 0", v)
		}
		if err != nil && !ryw.SettleBusy(err) {
			t.Fatalf("the quick settle failed: %v", err)
		}
		return err
	}
	// Other tests' monitors write now and then: wait for a quiet moment.
	waitUntil(t, func() bool { return look() == nil })

	table := newTable(t)
	writer, err := stack.Primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close(context.Background()) })
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ('k', 'v1')"); err != nil {
		t.Fatal(err)
	}
	// Its ID is the newest: past the snapshot's xmax.
	if err := look(); !ryw.SettleBusy(err) {
		t.Fatalf("with a write running, the quick settle answered %v, want busy", err)
	}
	// A later transaction commits: the xmax passes the running one's ID,
	// which the snapshot now lists as running.
	if err := stack.Primary.Exec(ctx, "INSERT INTO "+table+" VALUES ('k2', 'v1')"); err != nil {
		t.Fatal(err)
	}
	var xmin, xmax string
	if err := stack.Primary.QueryRow(ctx, []any{&xmin, &xmax}, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, pg_snapshot_xmax(pg_current_snapshot())::text"); err != nil {
		t.Fatal(err)
	}
	if xmin == xmax {
		t.Fatalf("the running write is not in the snapshot's list (xmin %s, xmax %s)", xmin, xmax)
	}
	if err := look(); !ryw.SettleBusy(err) {
		t.Fatalf("with a write in the snapshot's running list, the quick settle answered %v, want busy", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return look() == nil })
}
