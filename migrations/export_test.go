package migrations

import (
	"context"
	"database/sql"
)

// UpTo applies the migrations up to version, so that tests can build the
// database an older release left behind.
func UpTo(ctx context.Context, db *sql.DB, version int64) error {
	p, err := newProvider(db, nil)
	if err != nil {
		return err
	}
	_, err = p.UpTo(ctx, version)
	return err
}

// DownTo rolls the migrations back to version.
func DownTo(ctx context.Context, db *sql.DB, version int64) error {
	p, err := newProvider(db, nil)
	if err != nil {
		return err
	}
	_, err = p.DownTo(ctx, version)
	return err
}
