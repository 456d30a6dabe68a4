package devstack

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPgPool starts a pgpool-II in front of the package's cluster and
// checks that the application's statements go through it: a write lands on
// the primary, and SHOW POOL_NODES lists the primary and both replicas, up,
// in the roles they have.
func TestPgPool(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pgpool-II in front of PostgreSQL")
	}
	if !HavePgPool() {
		t.Skip("pgpool-II is not installed (apt-get install pgpool2; .ci/run installs it)")
	}
	p, err := stack.StartPgPool(t.Context(), PgPoolOptions{LoadBalanceOnWrite: "transaction"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(t.Context()); err != nil {
			t.Error(err)
		}
	})
	table := newTable(t)
	c, err := pgx.Connect(t.Context(), p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	if _, err := c.Exec(t.Context(), "INSERT INTO "+table+" (id, v) VALUES (1, 'through pgpool')"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := stack.Primary.QueryRow(t.Context(), []any{&v}, "SELECT v FROM "+table+" WHERE id = 1"); err != nil {
		t.Fatalf("the write through pgpool is not on the primary: %v", err)
	}
	nodes, err := p.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	all := append([]*Node{stack.Primary}, stack.Replicas...)
	if len(nodes) != len(all) {
		t.Fatalf("SHOW POOL_NODES lists %d nodes, want %d: %+v", len(nodes), len(all), nodes)
	}
	for i, n := range nodes {
		want := "standby"
		if i == 0 {
			want = "primary"
		}
		if n.Port != all[i].Port || n.Status != "up" || n.Role != want {
			t.Errorf("node %d = %+v, want %s on port %d, up, %s", i, n, all[i].Name, all[i].Port, want)
		}
	}
	t.Logf("pgpool on port %d: %+v", p.Port, nodes)
}
