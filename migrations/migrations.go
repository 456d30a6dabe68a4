// Package migrations holds the schema as embedded SQL files and applies them
// with goose. Every API instance runs Up at start-up: it is idempotent, and a
// PostgreSQL advisory lock makes instances that start together take turns.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/ryw-go/ryw/ryw"
)

//go:embed *.sql
var files embed.FS

// lockID is the advisory lock key the instances serialise on. It differs
// from goose's default so that another goose-managed schema in the same
// database never blocks ours.
const lockID = 0x7279772d6d6967 // "ryw-mig"

// Up applies every migration not yet applied to the primary behind db and
// returns how many it applied.
func Up(ctx context.Context, db *sql.DB, logger *slog.Logger) (int, error) {
	p, err := newProvider(db, logger)
	if err != nil {
		return 0, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return len(results), fmt.Errorf("apply migrations: %w", err)
	}
	return len(results), nil
}

// Version reports the schema version the database is at.
func Version(ctx context.Context, db *sql.DB) (int64, error) {
	p, err := newProvider(db, nil)
	if err != nil {
		return 0, err
	}
	return p.GetDBVersion(ctx)
}

func newProvider(db *sql.DB, logger *slog.Logger) (*goose.Provider, error) {
	// Retry the lock every second for up to five minutes: a second instance
	// waits while the first migrates instead of failing.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithSessionLocker(locker), goose.WithGoMigrations(fenceMigration(), fenceAckMigration())}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, files, opts...)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, nil
}

// fenceMigration creates the read-your-writes core's own table (ryw.Schema),
// from the core's definition, so that there is one.
func fenceMigration() *goose.Migration {
	return goose.NewGoMigration(4,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, ryw.Schema)
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "DROP TABLE ryw_fence")
			return err
		}},
	)
}

// fenceAckMigration adds the table in which each instance acknowledges the
// fence (ryw_fence_ack), by applying ryw.Schema again: it creates only what
// is missing.
func fenceAckMigration() *goose.Migration {
	return goose.NewGoMigration(7,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, ryw.Schema)
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "DROP TABLE ryw_fence_ack")
			return err
		}},
	)
}
