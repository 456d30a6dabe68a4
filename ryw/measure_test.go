package ryw_test

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ryw-go/ryw/ryw"
)

// measuredContext asks the reads in it to measure their position, as the
// router does with the session floor on.
func measuredContext(t *testing.T, node string) (context.Context, *ryw.Observation) {
	ctx, obs := ryw.WithObservation(t.Context())
	return ryw.WithDecision(ctx, ryw.Decision{Node: node, Reason: ryw.ReasonStaleOK, MeasureSeen: true}), obs
}

func openMeasured(t *testing.T, url string, replica bool, name string) *sql.DB {
	t.Helper()
	db, err := ryw.OpenPool(url, replica, ryw.PoolOptions{MaxOpen: 1, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// scanAll reads every row of query as database/sql hands it over.
func scanAll(t *testing.T, ctx context.Context, db *sql.DB, query string, args ...any) ([]string, [][]any) {
	t.Helper()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cols, out
}

// TestMeasuredReadsAreTheSameReads: a measured read hands database/sql
// the same columns and values as pgx's stdlib driver for every kind of
// column, and reports a position that is an upper bound of its snapshot:
// on the primary, at or past a write committed before it. A direct replica
// connection pins instead: the same rows, and the replica's run, no
// position.
func TestMeasuredReadsAreTheSameReads(t *testing.T) {
	needStack(t)
	const query = `SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.5::float8, 19.99::numeric(12,2), true, 'text'::text,
		'\xDEAD'::bytea, '{"a":1}'::jsonb, '2026-11-26 12:00:00.123456+00'::timestamptz, '2026-11-26 12:00:00'::timestamp,
		'2026-11-26'::date, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, NULL::text, ARRAY[1,2]::int[], $1::text AS arg
		FROM generate_series(1, 3)`
	plain := openPool(t, stack.Primary.URL)
	wantCols, want := scanAll(t, t.Context(), plain, query, "x")
	pdb := openMeasured(t, stack.Primary.URL, false, "")
	ctx, obs := measuredContext(t, ryw.Primary)
	before, err := stack.Primary.CurrentLSN(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cols, got := scanAll(t, ctx, pdb, query, "x")
	if !reflect.DeepEqual(cols, wantCols) || !reflect.DeepEqual(got, want) {
		t.Errorf("measured read:\n%v\n%v\nwant, as stdlib gives:\n%v\n%v", cols, got, wantCols, want)
	}
	if seen, complete := obs.Seen(); !complete || seen.LSN < before {
		t.Errorf("measured position %+v (complete %v); want at or past %s", seen, complete, before)
	}
	// An empty result still has its own columns, not the position query's.
	cols, got = scanAll(t, ctx, pdb, "SELECT 1 AS one WHERE false")
	if fmt.Sprint(cols) != "[one]" || len(got) != 0 {
		t.Errorf("empty measured read: columns %v, rows %v", cols, got)
	}

	// A replica: pinned to its run, not measured.
	db := openMeasured(t, stack.Replicas[0].URL, true, "replica1")
	ctx, obs = measuredContext(t, "replica1")
	cols, got = scanAll(t, ctx, db, query, "x")
	if !reflect.DeepEqual(cols, wantCols) || !reflect.DeepEqual(got, want) {
		t.Errorf("pinned read:\n%v\n%v\nwant:\n%v\n%v", cols, got, wantCols, want)
	}
	if node, inc, mixed := obs.Pinned(); node != "replica1" || inc == 0 || mixed {
		t.Errorf("pinned read on replica1: Pinned() = %q, %v, %v", node, inc, mixed)
	}
	if seen, complete := obs.Seen(); !seen.IsZero() || !complete {
		t.Errorf("pinned read measured %+v (complete %v); want no position", seen, complete)
	}

	// The position covers a write committed before the read.
	if _, err := pdb.ExecContext(t.Context(), "CREATE TABLE IF NOT EXISTS measured (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Primary.Exec(context.Background(), "DROP TABLE IF EXISTS measured") })
	if _, err := pdb.ExecContext(t.Context(), "INSERT INTO measured VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = 'a'"); err != nil {
		t.Fatal(err)
	}
	wrote, err := stack.Primary.CurrentLSN(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, obs = measuredContext(t, ryw.Primary)
	scanAll(t, ctx, pdb, "SELECT v FROM measured")
	if seen, complete := obs.Seen(); !complete || seen.LSN < wrote {
		t.Errorf("primary position %+v (complete %v); want at or past the write, %s", seen, complete, wrote)
	}

	// A write through a measured query commits even when the position
	// query fails: each is sent with a Sync of its own. (With one Sync for
	// both, they are one implicit transaction, and the failure rolls the
	// write back.) A role that may not run pg_walfile_name fails it.
	for _, sql := range []string{
		"DROP ROLE IF EXISTS measured_test", "CREATE ROLE measured_test LOGIN",
		"GRANT ALL ON measured TO measured_test", "REVOKE EXECUTE ON FUNCTION pg_walfile_name(pg_lsn) FROM PUBLIC",
	} {
		if err := stack.Primary.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		stack.Primary.Exec(context.Background(), "GRANT EXECUTE ON FUNCTION pg_walfile_name(pg_lsn) TO PUBLIC")
	})
	limited := openMeasured(t, strings.Replace(stack.Primary.URL, "postgres@", "measured_test@", 1), false, "")
	ctx, obs = measuredContext(t, ryw.Primary)
	scanAll(t, ctx, limited, "INSERT INTO measured VALUES (2, 'b') RETURNING id")
	var n int
	if err := stack.Primary.QueryRow(t.Context(), []any{&n}, "SELECT count(*) FROM measured WHERE id = 2"); err != nil || n != 1 {
		t.Errorf("INSERT ... RETURNING through a measured query whose position query failed: %d rows, %v; want it committed", n, err)
	}
	if _, complete := obs.Seen(); complete {
		t.Error("a read whose position query failed was taken as measured")
	}
	ctx, _ = measuredContext(t, ryw.Primary)

	// The schema changes under the connection's prepared statement: the
	// read is prepared again, once, and succeeds.
	scanAll(t, ctx, pdb, "SELECT * FROM measured ORDER BY id")
	if _, err := pdb.ExecContext(t.Context(), "ALTER TABLE measured ADD COLUMN w text"); err != nil {
		t.Fatal(err)
	}
	cols, _ = scanAll(t, ctx, pdb, "SELECT * FROM measured ORDER BY id")
	if fmt.Sprint(cols) != "[id v w]" {
		t.Errorf("after ALTER TABLE: columns %v", cols)
	}
	// The unmeasured path on the same connection is untouched by the
	// measured statements.
	cols, _ = scanAll(t, t.Context(), pdb, "SELECT * FROM measured ORDER BY id")
	if fmt.Sprint(cols) != "[id v w]" {
		t.Errorf("unmeasured read after ALTER TABLE: columns %v", cols)
	}

	// Inside a transaction nothing is measured: the observation says so.
	ctx, obs = measuredContext(t, ryw.Primary)
	tx, err := pdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := tx.QueryRowContext(ctx, "SELECT v FROM measured WHERE id = 1").Scan(&v); err != nil || v != "a" {
		t.Errorf("read in a transaction = %q, %v", v, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, complete := obs.Seen(); complete {
		t.Error("a read inside a transaction was taken as measured")
	}
}

// BenchmarkMeasuredRead is what measuring a read costs: the same query on
// one primary connection, plain and measured (the position query in the
// same round trip), and on one replica connection, plain and pinned (what
// monotonic reads cost there now: nothing). Compare them in one run:
//
//	go test ./ryw -run '^$' -bench MeasuredRead -count 5
func BenchmarkMeasuredRead(b *testing.B) {
	needStack(b)
	const query = "SELECT id, email, name, avatar_url, created_at, updated_at FROM users WHERE id = $1"
	id := "00000000-0000-0000-0000-000000000000"
	primary := openMeasuredB(b, stack.Primary.URL, false, "")
	replica := openMeasuredB(b, stack.Replicas[0].URL, true, "replica1")
	for _, bm := range []struct {
		name string
		db   *sql.DB
		ctx  context.Context
	}{
		{"primary/plain", primary, b.Context()},
		{"primary/measured", primary, ryw.WithDecision(b.Context(), ryw.Decision{Node: ryw.Primary, Reason: ryw.ReasonStaleOK, MeasureSeen: true})},
		{"replica/plain", replica, b.Context()},
		{"replica/pinned", replica, ryw.WithDecision(b.Context(), ryw.Decision{Node: "replica1", Reason: ryw.ReasonStaleOK, MeasureSeen: true})},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				ctx, _ := ryw.WithObservation(bm.ctx)
				rows, err := bm.db.QueryContext(ctx, query, id)
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
				}
				if err := rows.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func openMeasuredB(b *testing.B, url string, replica bool, name string) *sql.DB {
	db, err := ryw.OpenPool(url, replica, ryw.PoolOptions{MaxOpen: 1, MaxIdle: 1, Name: name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}
