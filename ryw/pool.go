package ryw

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
	MaxOpen     int
	MaxIdle     int
	MaxLifetime time.Duration
	MaxIdleTime time.Duration
}

// OpenPool opens a database/sql pool on pgx for one node, without
// connecting. For a replica pool, each connection, before it runs the
// query of a read whose Decision carries a MinLSN, checks on itself that
// the replica has replayed that far: a connection never outlives its
// server, and replay only moves forward while the server runs, so the
// check holds for the query that follows. A replica whose known position
// was overstated (it crashed and is replaying again) thus fails the read
// with *BehindError instead of answering it stale, and Router.Read retries
// it on the primary.
func OpenPool(url string, replica bool, o PoolOptions) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	var opts []stdlib.OptionOpenDB
	if replica {
		opts = append(opts,
			stdlib.OptionAfterConnect(checkReplayed),
			stdlib.OptionResetSession(func(ctx context.Context, c *pgx.Conn) error {
				// database/sql ignores ResetSession errors other than
				// ErrBadConn: drop the connection, and the new one's
				// AfterConnect check reports the error.
				if err := checkReplayed(ctx, c); err != nil {
					return driver.ErrBadConn
				}
				return nil
			}),
		)
	}
	db := stdlib.OpenDB(*cfg, opts...)
	db.SetMaxOpenConns(o.MaxOpen)
	db.SetMaxIdleConns(o.MaxIdle)
	db.SetConnMaxLifetime(o.MaxLifetime)
	db.SetConnMaxIdleTime(o.MaxIdleTime)
	return db, nil
}

func checkReplayed(ctx context.Context, c *pgx.Conn) error {
	d, ok := DecisionFrom(ctx)
	if !ok || d.MinLSN == 0 || d.OnPrimary() {
		return nil
	}
	var text *string
	if err := c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&text); err != nil {
		return err
	}
	if text == nil {
		return &BehindError{Need: d.MinLSN}
	}
	lsn, err := ParseLSN(*text)
	if err != nil {
		return err
	}
	if lsn < d.MinLSN {
		return &BehindError{Replayed: lsn, Need: d.MinLSN}
	}
	return nil
}

// PrimaryWAL reads the primary's WAL position.
type PrimaryWAL struct {
	DB *sql.DB
}

// CurrentLSN returns pg_current_wal_lsn(). Taken after a commit returned,
// it is at or past that commit's record as long as commits wait for the
// local WAL flush (synchronous_commit is not off; see CheckTokenSafety).
func (w PrimaryWAL) CurrentLSN(ctx context.Context) (LSN, error) {
	var text string
	if err := w.DB.QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		return 0, err
	}
	return ParseLSN(text)
}

// CheckTokenSafety refuses a primary on which commits may return before
// their WAL is flushed (synchronous_commit = off): a position read after
// such a commit could be short of it, and a replica at that position would
// not show the write.
func (w PrimaryWAL) CheckTokenSafety(ctx context.Context) error {
	var setting string
	if err := w.DB.QueryRowContext(ctx, "SELECT current_setting('synchronous_commit')").Scan(&setting); err != nil {
		return err
	}
	if setting == "off" {
		return fmt.Errorf("synchronous_commit is off for this service's sessions on the primary: lsn mode needs commits to wait for the WAL flush (local or stronger)")
	}
	return nil
}
