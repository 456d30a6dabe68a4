package devstack

import (
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPoolers starts a stack with a PgBouncer in front of every node, in
// each pool mode, and checks that the application's URLs go through it:
// the server process a connection reaches is not the one the connection
// was given at start-up (PgBouncer hands out its own cancel keys), and
// pgbouncer's admin console shows the node's pool in the mode asked for.
func TestPoolers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and PgBouncer")
	}
	for _, mode := range []string{PoolTransaction, PoolSession} {
		t.Run(mode, func(t *testing.T) {
			s, err := Start(t.Context(), Options{Replicas: 1, Pooler: mode})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, n := range []*Node{s.Primary, s.Replicas[0]} {
				if n.Pooler() == nil {
					t.Fatalf("%s has no pooler", n.Name)
				}
				u := s.ClientURL(n)
				if u == n.URL {
					t.Fatalf("%s: the client URL %s is the node's own", n.Name, u)
				}
				cfg, err := pgx.ParseConfig(u)
				if err != nil {
					t.Fatal(err)
				}
				cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
				c, err := pgx.ConnectConfig(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				var pid int64
				var replica bool
				if err := c.QueryRow(t.Context(), "SELECT pg_backend_pid(), pg_is_in_recovery()").Scan(&pid, &replica); err != nil {
					t.Fatal(err)
				}
				c.Close(t.Context())
				if uint32(pid) == c.PgConn().PID() {
					t.Errorf("%s: the connection was given the server's own process id %d: no pooler in between", n.Name, pid)
				}
				if replica != n.IsReplica() {
					t.Errorf("%s: pg_is_in_recovery() = %v through the pooler", n.Name, replica)
				}
				rows, err := n.Pooler().Admin(t.Context(), "SHOW POOLS")
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, r := range rows {
					if len(r) > 0 && r[0] == s.db {
						found = true
						if got := r[len(r)-1]; got != mode {
							t.Errorf("%s: pool_mode %q, want %q (row %v)", n.Name, got, mode, r)
						}
					}
				}
				if !found {
					t.Errorf("%s: SHOW POOLS has no pool for %s: %v", n.Name, s.db, rows)
				}
				t.Logf("%s through pgbouncer on port %s: backend pid %d, the connection's %d", n.Name, strconv.Itoa(n.Pooler().Port), pid, c.PgConn().PID())
			}
		})
	}
}
