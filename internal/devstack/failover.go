package devstack

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// FailoverOptions adjust a failover.
type FailoverOptions struct {
	// Promote names the replica to promote. Empty: the one that has
	// received the most WAL (the first of those that tie), what Patroni
	// does; naming a less advanced one leaves the others diverged.
	Promote string
	// Detect is how long after the kill the promotion starts: a failure
	// detector's delay (Patroni's TTL). 0: at once.
	Detect time.Duration
	// BeforePromote, when set, runs after the primary is killed and the
	// replica to promote has replayed all the WAL it received, just before
	// it is promoted: its data is then the new timeline's at the switch
	// point.
	BeforePromote func(ctx context.Context, promoted *Node) error
}

// FailoverResult is what a failover did.
type FailoverResult struct {
	// Old is the old primary, stopped.
	Old *Node
	// Promoted is the new primary, on Timeline since PromotedAt (when
	// pg_promote returned). It may take writes up to a tenth of a second
	// before that: pg_promote polls the end of recovery 10 times a second.
	// Which node acknowledged a write is told by its timeline, not by
	// comparing times with PromotedAt.
	Promoted   *Node
	Timeline   int
	PromotedAt time.Time
	// Diverged are the replicas that had received WAL past the switch
	// point: they cannot follow the new timeline (they would need
	// pg_rewind) and stay on the old one, out of Replicas.
	Diverged []*Node
}

// Failover does what an operator, or Patroni, does when the primary dies:
// it kills the primary the way a crash would, promotes the replica that has
// received the most WAL, and re-points every other replica at it. They
// follow the new timeline. Promoting the most advanced replica is what
// makes a synchronous quorum (see SetSynchronousStandbys) lose no
// acknowledged write.
// It returns the old primary, stopped. The old primary is not rejoined: its
// data directory may hold writes that the promotion lost (replication is
// asynchronous) and would need pg_rewind first.
//
// Afterwards Primary is the promoted node and Replicas are the others. No
// other use of the stack may run while it does this. An API started with
// PrimaryURLs as its DATABASE_URL follows the new primary without a
// restart.
func (s *Stack) Failover(ctx context.Context) (old *Node, err error) {
	res, err := s.FailoverWith(ctx, FailoverOptions{})
	return res.Old, err
}

// FailoverWith is Failover with options: which replica to promote, and a
// look at it before it is. Replicas that cannot follow the promoted one
// (they received more WAL than it had) are left where they are and
// reported as diverged.
func (s *Stack) FailoverWith(ctx context.Context, o FailoverOptions) (res FailoverResult, err error) {
	if len(s.Replicas) == 0 {
		return res, fmt.Errorf("devstack: failover needs a replica to promote")
	}
	res.Old = s.Primary
	if err := res.Old.Kill(ctx); err != nil {
		return res, fmt.Errorf("devstack: kill %s: %w", res.Old.Name, err)
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(o.Detect):
	}
	received := make([]ryw.LSN, len(s.Replicas))
	best := -1
	for i, r := range s.Replicas {
		lsn, err := r.received(ctx)
		if err != nil {
			received[i] = 0
			continue // not running: not a candidate
		}
		received[i] = lsn
		if o.Promote == "" && (best < 0 || lsn > received[best]) {
			best = i
		}
		if o.Promote == r.Name {
			best = i
		}
	}
	if best < 0 {
		return res, fmt.Errorf("devstack: no replica to promote answers (asked for %q)", o.Promote)
	}
	promoted := s.Replicas[best]
	res.Promoted = promoted
	if o.BeforePromote != nil {
		if err := promoted.WaitReplayed(ctx, received[best]); err != nil {
			return res, err
		}
		if err := o.BeforePromote(ctx, promoted); err != nil {
			return res, err
		}
	}
	var ok bool
	if err := promoted.QueryRow(ctx, []any{&ok}, "SELECT pg_promote(true, 60)"); err != nil || !ok {
		return res, fmt.Errorf("devstack: promote %s: %v (promoted: %v)", promoted.Name, err, ok)
	}
	res.PromotedAt = time.Now()
	promoted.replica = false
	tli, err := promoted.Timeline(ctx)
	if err != nil {
		return res, err
	}
	res.Timeline = tli
	var others []*Node
	for i, r := range s.Replicas {
		switch {
		case i == best:
		case received[i] > received[best]:
			res.Diverged = append(res.Diverged, r)
		default:
			others = append(others, r)
		}
	}
	for _, r := range others {
		// Each replica streams through its own slot, as it did from the
		// old primary.
		if err := promoted.Exec(ctx, "SELECT pg_create_physical_replication_slot($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", r.Name); err != nil {
			return res, fmt.Errorf("devstack: slot for %s on %s: %w", r.Name, promoted.Name, err)
		}
		if err := r.setPrimaryConninfo(ctx, promoted.Port); err != nil {
			return res, err
		}
	}
	s.Primary, s.Replicas = promoted, others
	s.mu.Lock()
	s.retired = append(s.retired, res.Old)
	s.retired = append(s.retired, res.Diverged...)
	s.mu.Unlock()
	for _, r := range others {
		if err := r.waitStreaming(ctx, tli); err != nil {
			return res, err
		}
	}
	return res, nil
}

// received is how far the replica has received (or replayed) WAL.
func (n *Node) received(ctx context.Context) (ryw.LSN, error) {
	var text string
	if err := n.QueryRow(ctx, []any{&text}, "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"); err != nil {
		return 0, err
	}
	return ryw.ParseLSN(text)
}

// Timeline is the timeline the node is on: a primary's own, or the one a
// replica's WAL receiver streams. (pg_control_checkpoint() lags behind a
// promotion until the next checkpoint, so neither reads it.)
func (n *Node) Timeline(ctx context.Context) (int, error) {
	var inRecovery bool
	if err := n.QueryRow(ctx, []any{&inRecovery}, "SELECT pg_is_in_recovery()"); err != nil {
		return 0, err
	}
	if !inRecovery {
		// A WAL file's name starts with the timeline, in hex.
		var file string
		if err := n.QueryRow(ctx, []any{&file}, "SELECT pg_walfile_name(pg_current_wal_lsn())"); err != nil {
			return 0, err
		}
		tli, err := strconv.ParseInt(file[:8], 16, 32)
		return int(tli), err
	}
	var tli *int32
	if err := n.QueryRow(ctx, []any{&tli}, "SELECT received_tli FROM pg_stat_wal_receiver"); err != nil {
		return 0, err
	}
	if tli == nil {
		return 0, fmt.Errorf("%s: no WAL receiver", n.Name)
	}
	return int(*tli), nil
}

// Detach stops the replica receiving WAL, as a network partition between
// it and the primary would: its primary_conninfo points nowhere until
// Failover re-points it (or Attach). Commits on the primary are then still
// acknowledged, unless a synchronous quorum waits for this replica, and a
// failover that promotes a detached replica loses them.
func (n *Node) Detach(ctx context.Context) error {
	if err := n.setPrimaryConninfo(ctx, 1); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var streaming int
		if err := n.QueryRow(ctx, []any{&streaming}, "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"); err != nil {
			return err
		}
		if streaming == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: still streaming 60s after it was detached", n.Name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Attach points the replica at primary again and waits until it streams
// primary's timeline.
func (n *Node) Attach(ctx context.Context, primary *Node) error {
	if err := n.setPrimaryConninfo(ctx, primary.Port); err != nil {
		return err
	}
	tli, err := primary.Timeline(ctx)
	if err != nil {
		return err
	}
	return n.waitStreaming(ctx, tli)
}

// setPrimaryConninfo points the replica's WAL receiver at port.
func (n *Node) setPrimaryConninfo(ctx context.Context, port int) error {
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", port, n.Name)
	if err := n.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = "+quoteLiteral(conninfo)); err != nil {
		return fmt.Errorf("devstack: re-point %s: %w", n.Name, err)
	}
	return n.Exec(ctx, "SELECT pg_reload_conf()")
}

// waitStreaming waits until the replica's WAL receiver streams timeline tli.
func (n *Node) waitStreaming(ctx context.Context, tli int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var status *string
		var got *int32
		err := n.QueryRow(ctx, []any{&status, &got}, "SELECT max(status), max(received_tli) FROM pg_stat_wal_receiver")
		if err == nil && status != nil && *status == "streaming" && got != nil && int(*got) == tli {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not streaming timeline %d within 60s (status %v, timeline %v, %v)", n.Name, tli, deref(status), deref(got), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// SetSynchronousStandbys makes commits on the primary wait until n of the
// replicas have flushed them (synchronous_standby_names = 'ANY n (...)',
// a quorum); 0 makes replication asynchronous again. With n >= 1, a
// Failover loses no acknowledged commit: the promoted replica, the most
// advanced one, has every commit the quorum confirmed.
func (s *Stack) SetSynchronousStandbys(ctx context.Context, n int) error {
	value := ""
	if n > 0 {
		names := make([]string, len(s.Replicas))
		for i, r := range s.Replicas {
			names[i] = quoteIdent(r.Name)
		}
		value = fmt.Sprintf("ANY %d (%s)", n, strings.Join(names, ", "))
	}
	if err := s.Primary.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(value)); err != nil {
		return err
	}
	return s.Primary.Exec(ctx, "SELECT pg_reload_conf()")
}

// PrimaryURLs is a DATABASE_URL that names the primary and then every
// replica, with target_session_attrs=read-write: pgx connects to whichever
// accepts writes, so that an API follows the primary through a Failover.
// Its hosts and user are the application's: the poolers', and AppRole with
// Options.LeastPrivilege.
func (s *Stack) PrimaryURLs() string {
	user := "postgres"
	if s.appUser != "" {
		user = s.appUser
	}
	return s.primaryURLs(user, (*Node).clientHost)
}

// OwnerURL is PrimaryURLs for the schema's owner: the superuser, straight
// to the nodes, as migrations need (they hold a session-level lock, which
// a transaction pooler does not keep).
func (s *Stack) OwnerURL() string {
	return s.primaryURLs("postgres", func(n *Node) string { return fmt.Sprintf("127.0.0.1:%d", n.Port) })
}

func (s *Stack) primaryURLs(user string, host func(*Node) string) string {
	hosts := []string{host(s.Primary)}
	for _, r := range s.Replicas {
		hosts = append(hosts, host(r))
	}
	return "postgres://" + user + "@" + strings.Join(hosts, ",") + "/" + s.db + "?sslmode=disable&target_session_attrs=read-write"
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
