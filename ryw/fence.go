package ryw

import (
	"context"
	_ "embed"
)

// Schema creates the one table ryw keeps on the primary: the fence. Apply it
// with the application's migrations, or set Config.CreateSchema. The same
// SQL is in schema.sql, for migration tools that read files.
//
// The fence is a WAL position that every own-write read must see, whoever
// the user: an instance that committed a write but could not record its
// token in Redis raises the fence to that token, so that every instance,
// not only itself, keeps reads off replicas that have not replayed the
// write. Each Monitor reads the fence with its regular poll of the primary.
// It only rises; once every replica has replayed it, it costs nothing.
//
//go:embed schema.sql
var Schema string

// RaiseFence raises the primary's fence to lsn (it never lowers it).
func (w PrimaryWAL) RaiseFence(ctx context.Context, lsn LSN) error {
	_, err := w.DB.ExecContext(internal(ctx), "UPDATE ryw_fence SET lsn = greatest(lsn, $1::pg_lsn) WHERE id = 1", lsn.String())
	return err
}
