package ryw

import (
	"context"
	"crypto/rand"
	"database/sql"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Schema creates the two tables ryw keeps on the primary: the fence, and
// each instance's acknowledgement of it. Apply it with the application's
// migrations, or set Config.CreateSchema. The same SQL is in schema.sql,
// for migration tools that read files; it only creates what is missing, so
// applying it again after an upgrade adds what the new version needs.
//
// The fence is a WAL position that every own-write read must see, whoever
// the user: an instance that committed a write but could not record its
// token in Redis raises the fence to that token, so that every instance,
// not only itself, keeps reads off replicas that have not replayed the
// write. Each Monitor reads the fence with its regular poll of the primary
// and acknowledges the fence it routes by in ryw_fence_ack; the write is
// answered once every instance has acknowledged it, every replica has
// replayed it, or the fence lease has passed. The fence only rises; once
// every replica has replayed it, it costs nothing.
//
//go:embed schema.sql
var Schema string

// RaiseFence raises the primary's fence to lsn (it never lowers it).
func (w PrimaryWAL) RaiseFence(ctx context.Context, lsn LSN) error {
	_, err := w.DB.ExecContext(internal(ctx), "UPDATE ryw_fence SET lsn = greatest(lsn, $1::pg_lsn) WHERE id = 1", lsn.String())
	return err
}

// Acknowledgements. An instance may route by a fence only while its row in
// ryw_fence_ack is live: written, by a statement that started less than
// ackValid ago, before the poll that read the fence started. It rewrites
// the row whenever the fence or timeline it routes by changes, and at least
// every ackBeat. A writer waiting on the fence counts the rows written
// within ackValid and a tenth, on the primary's clock (the tenth covers
// clocks that run at slightly different rates): an instance whose row is
// older routes by no fence at all, and so sends its own-write reads to the
// primary. A crashed instance therefore holds fenced writes up to the
// lease for ackValid, and then no more.
const (
	ackBeat  = time.Second
	ackValid = 3 * time.Second
	// ackForget is how old a row must be before an instance's start-up
	// deletes it: the rows of instances that crashed.
	ackForget = time.Hour
)

// AcknowledgedFence returns the lowest fence that the instances that may
// still route by one have acknowledged on timeline: every own-write read
// that any instance routes from now on sees at least it. It is 0 if one of
// them routes by another timeline's fence, and the highest LSN if none
// routes by a fence at all.
func (w PrimaryWAL) AcknowledgedFence(ctx context.Context, timeline int) (LSN, error) {
	var least sql.NullString
	var other int
	err := w.DB.QueryRowContext(internal(ctx), `SELECT min(fence) FILTER (WHERE timeline = $1)::text, count(*) FILTER (WHERE timeline <> $1)
		FROM ryw_fence_ack WHERE at > now() - make_interval(secs => $2)`, timeline, (ackValid+ackValid/10).Seconds()).Scan(&least, &other)
	switch {
	case err != nil:
		return 0, err
	case other > 0:
		return 0, nil
	case !least.Valid:
		// No instance routes by any fence: every fence is acknowledged.
		return ^LSN(0), nil
	}
	return ParseLSN(least.String)
}

// newInstanceID names this process's row in ryw_fence_ack: host, process
// and a random part, so that a restarted process is a new instance.
func newInstanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// acknowledge writes the monitor's row: the fence and timeline it routes
// by. The first write of a run also forgets the rows of crashed instances.
func (m *Monitor) acknowledge(ctx context.Context, timeline int, fence LSN, first bool) error {
	if first {
		if _, err := m.primary.ExecContext(ctx, "DELETE FROM ryw_fence_ack WHERE at < now() - make_interval(secs => $1)", ackForget.Seconds()); err != nil {
			return err
		}
	}
	_, err := m.primary.ExecContext(ctx, `INSERT INTO ryw_fence_ack (instance, timeline, fence, at) VALUES ($1, $2, $3::pg_lsn, now())
		ON CONFLICT (instance) DO UPDATE SET timeline = excluded.timeline, fence = excluded.fence, at = excluded.at`,
		m.instance, timeline, fence.String())
	return err
}

// ack acknowledges the fence and timeline the monitor routes by (see
// acknowledge), registering the instance if it is not. A failure is logged
// once until an acknowledgement succeeds again; meanwhile the fence lapses
// (see Fence) and own-write reads go to the primary.
func (m *Monitor) ack(ctx context.Context) {
	m.mu.RLock()
	timeline, fence, first := m.primaryTimeline, m.fence, !m.forgotCrashed
	m.mu.RUnlock()
	start := m.now()
	err := m.acknowledge(ctx, timeline, fence, first)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		var pgErr *pgconn.PgError
		switch {
		case m.ackErr != "" || ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		case errors.As(err, &pgErr) && (pgErr.Code == "42501" || pgErr.Code == "42P01"):
			m.logger.Warn("cannot acknowledge the fence on the primary: own-write reads go to the primary until it can; apply ryw.Schema and grant the role SELECT, INSERT, UPDATE and DELETE on ryw_fence_ack", "err", err)
		default:
			// The primary is down or busy: its poll says so too.
			m.logger.Warn("cannot acknowledge the fence on the primary: own-write reads go to the primary until it can", "err", err)
		}
		m.ackErr = err.Error()
		return
	}
	if m.ackErr != "" {
		m.logger.Info("acknowledges the fence on the primary again")
		m.ackErr = ""
	}
	m.forgotCrashed = true
	if m.registeredAt.IsZero() {
		m.registeredAt = m.now()
	}
	m.ackStart, m.ackedFence, m.ackedTimeline = start, fence, timeline
}

// deregister deletes the monitor's row once it has stopped polling, so
// that fenced writes do not wait for it; it routes by no fence from then on.
func (m *Monitor) deregister() {
	m.mu.Lock()
	was := !m.registeredAt.IsZero()
	m.registeredAt = time.Time{}
	m.mu.Unlock()
	if !was {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := m.primary.ExecContext(ctx, "DELETE FROM ryw_fence_ack WHERE instance = $1", m.instance); err != nil {
		m.logger.Warn("could not remove this instance's fence acknowledgement; fenced writes wait the lease for it a few seconds", "err", err)
	}
}
