package devstack

import (
	"context"
	"fmt"
)

// AppGrants are the statements that create the application's role with
// Options.LeastPrivilege, on a database whose schema the superuser has
// migrated: every privilege the service's statements need, and nothing
// more (docs/OPERATIONS.md, "Database role: least privilege", says why
// each is there). The optional grant of pg_read_file is apart: see
// ReadFileGrant.
func AppGrants(database, role string) []string {
	db, r := quoteIdent(database), quoteIdent(role)
	return []string{
		// Not a superuser, and none of the attributes that come close.
		"CREATE ROLE " + r + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
		// Only the roles granted it may connect to the application's
		// database or create temporary tables in it; nobody but the
		// owner creates objects in its schema (PostgreSQL 15's default).
		"REVOKE ALL ON DATABASE " + db + " FROM PUBLIC",
		"GRANT CONNECT ON DATABASE " + db + " TO " + r,
		"REVOKE CREATE ON SCHEMA public FROM PUBLIC",
		"GRANT USAGE ON SCHEMA public TO " + r,
		// The profiles: read, and saved with INSERT ... ON CONFLICT DO
		// UPDATE ... RETURNING. Nothing is deleted.
		"GRANT SELECT, INSERT, UPDATE ON TABLE users TO " + r,
		// The catalog is only read.
		"GRANT SELECT ON TABLE products TO " + r,
		// ryw's fence: read by every poll of the primary, raised when a
		// write's mark cannot be recorded.
		"GRANT SELECT, UPDATE ON TABLE ryw_fence TO " + r,
		// Each instance's acknowledgement of the fence: written at every
		// change and every second, read by fenced writes, deleted when
		// the instance stops (and a crashed one's row an hour later).
		"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ryw_fence_ack TO " + r,
		// The API checks at start-up that the schema is current (goose);
		// applying migrations stays with the owner.
		"GRANT SELECT ON TABLE goose_db_version TO " + r,
		// The timeline a replica streams (pg_stat_wal_receiver.received_tli
		// is NULL without it): a replica that follows a promotion rejoins
		// the rotation at once rather than at its next restartpoint.
		"GRANT pg_read_all_stats TO " + r,
	}
}

// ReadFileGrant is the optional grant that lets role read the primary's
// timeline history files, with which ryw places positions of earlier
// timelines after a failover and finds writes the failover lost.
func ReadFileGrant(role string) string {
	return "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) TO " + quoteIdent(role)
}

// createAppRole creates AppRole on the primary with AppGrants and
// ReadFileGrant, waits until every replica has replayed it, and has the
// application's URLs (ClientURL, Env, PrimaryURLs, ReplicaURLs) use it.
func (s *Stack) createAppRole(ctx context.Context) error {
	conn, err := s.Primary.Conn(ctx)
	if err != nil {
		return fmt.Errorf("devstack: create the application's role: %w", err)
	}
	defer conn.Close(context.Background())
	for _, stmt := range append(AppGrants(s.db, AppRole), ReadFileGrant(AppRole)) {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("devstack: create the application's role: %s: %w", stmt, err)
		}
	}
	if err := s.WaitCaughtUp(ctx, s.Replicas...); err != nil {
		return err
	}
	s.appUser = AppRole
	s.logf("the application connects as %q (not a superuser)", AppRole)
	return nil
}

// GrantReadFile grants (or, with grant false, revokes) AppRole's EXECUTE on
// pg_read_file(text), and waits until the running replicas have replayed
// it. Without it ryw cannot read the primary's timeline history: after a
// failover, reads that must show a write of an earlier timeline go to the
// primary, and writes the failover lost are not detected. Replay must not
// be paused.
func (s *Stack) GrantReadFile(ctx context.Context, grant bool) error {
	if s.appUser == "" {
		return fmt.Errorf("devstack: GrantReadFile needs a stack started with LeastPrivilege")
	}
	stmt := ReadFileGrant(s.appUser)
	if !grant {
		stmt = "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) FROM " + quoteIdent(s.appUser)
	}
	if err := s.Primary.Exec(ctx, stmt); err != nil {
		return err
	}
	var running []*Node
	for _, r := range s.Replicas {
		if r.Running() {
			running = append(running, r)
		}
	}
	return s.WaitCaughtUp(ctx, running...)
}
