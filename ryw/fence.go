package ryw

import (
	"context"
)

// Schema creates the one table ryw keeps on the primary: the fence. Apply it
// with the application's migrations (this service's migrations do).
//
// The fence is a WAL position that every own-write read must see, whoever
// the user: an instance that committed a write but could not record its
// token in Redis raises the fence to that token, so that every instance,
// not only itself, keeps reads off replicas that have not replayed the
// write. Each Monitor reads the fence with its regular poll of the primary.
// It only rises; once every replica has replayed it, it costs nothing.
const Schema = `
CREATE TABLE IF NOT EXISTS ryw_fence (
    id  smallint PRIMARY KEY CHECK (id = 1),
    lsn pg_lsn   NOT NULL
);
INSERT INTO ryw_fence (id, lsn) VALUES (1, '0/0') ON CONFLICT (id) DO NOTHING;
`

// RaiseFence raises the primary's fence to lsn (it never lowers it).
func (w PrimaryWAL) RaiseFence(ctx context.Context, lsn LSN) error {
	_, err := w.DB.ExecContext(ctx, "UPDATE ryw_fence SET lsn = greatest(lsn, $1::pg_lsn) WHERE id = 1", lsn.String())
	return err
}
