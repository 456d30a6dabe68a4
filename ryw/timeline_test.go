package ryw_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// TestMonitorRefusesAReplicaOfAnotherCluster: positions are comparable only
// within one cluster, so a standby of another cluster, listed by mistake,
// never serves. Control: the stack's own replica, same poll, does.
func TestMonitorRefusesAReplicaOfAnotherCluster(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	other, err := devstack.Start(ctx, devstack.Options{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	m := ryw.NewMonitor(openPool(t, stack.Primary.URL), []ryw.NodeDB{
		{Name: "ours", DB: openPool(t, stack.Replicas[0].URL)},
		{Name: "theirs", DB: openPool(t, other.Replicas[0].URL)},
	}, time.Hour, quiet())
	m.Poll(ctx)
	st := m.Status()
	if !st[0].Healthy || st[0].Timeline == 0 {
		t.Errorf("the stack's own replica: %+v; want healthy, with its timeline (the control)", st[0])
	}
	if st[1].Healthy || !strings.Contains(st[1].Error, "system identifier") {
		t.Errorf("a replica of another cluster: %+v; want out, for its system identifier", st[1])
	}
	if fresh := m.CaughtUp(0); strings.Join(fresh, ",") != "ours" {
		t.Errorf("CaughtUp = %v; want only ours", fresh)
	}
}

// TestMonitorRefusesAReplicaLeftOnAnOldTimeline: after the primary dies and
// replica1 is promoted, replica2, not yet re-pointed, is still on the old
// timeline: it is out of rotation. Once it follows the new primary, it is
// back. The monitor follows the primary through a multi-host URL.
func TestMonitorRefusesAReplicaLeftOnAnOldTimeline(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	s, err := devstack.Start(ctx, devstack.Options{Replicas: 2, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r1, r2 := s.Replicas[0], s.Replicas[1]
	m := ryw.NewMonitor(openPool(t, s.PrimaryURLs()), []ryw.NodeDB{{Name: "replica2", DB: openPool(t, r2.URL)}}, time.Hour, quiet())
	m.Poll(ctx)
	if c := m.Cluster(); c.System == "" || c.Timeline != 1 {
		t.Fatalf("the primary: system %q, timeline %d; want timeline 1", c.System, c.Timeline)
	}
	if st := m.Status()[0]; !st.Healthy || st.Timeline != 1 {
		t.Fatalf("replica2 before the failover: %+v; want healthy on timeline 1", st)
	}

	// The failover, by hand, without re-pointing replica2.
	if err := s.Primary.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := r1.QueryRow(ctx, []any{&ok}, "SELECT pg_promote(true, 60)"); err != nil || !ok {
		t.Fatalf("promote replica1: %v %v", ok, err)
	}
	waitUntil(t, func() bool { // the monitor sees the new primary
		m.Poll(ctx)
		tli := m.Cluster().Timeline
		return tli == 2
	})
	if st := m.Status()[0]; st.Healthy || !strings.Contains(st.Error, "timeline 1") {
		t.Errorf("replica2 left on timeline 1: %+v; want out of rotation", st)
	}
	if fresh := m.CaughtUp(0); len(fresh) != 0 {
		t.Errorf("CaughtUp = %v; want none", fresh)
	}

	// Re-pointed, it follows timeline 2 and is back.
	if err := r1.Exec(ctx, "SELECT pg_create_physical_replication_slot('replica2')"); err != nil {
		t.Fatal(err)
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=replica2", r1.Port)
	if err := r2.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = '"+conninfo+"'"); err != nil {
		t.Fatal(err)
	}
	if err := r2.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { // replica2 back on timeline 2
		m.Poll(ctx)
		st := m.Status()[0]
		return st.Healthy && st.Timeline == 2
	})
}
