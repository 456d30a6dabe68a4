package ryw_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
)

// TestClusterNodeRestartedEmptyStartsANewEpoch: in a Redis Cluster the
// epoch key lives on one master. Another master that restarts empty (no
// replica, no persistence; a replica promoted before it had its master's
// newest marks is the same case) loses the marks of its slots, and its
// users' reads must then be held to a floor past every write acknowledged
// before the loss. The restarted node has a new run id, and reaching it
// takes a new connection: the tracker must notice before it trusts the
// (missing) marks it reads there.
//
// Control: the floor before the restart is below the user's write, so a
// lookup that trusted the epoch alone (the design before this test) would
// send the user's read to a replica that lacks it.
func TestClusterNodeRestartedEmptyStartsANewEpoch(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	s, err := devstack.Start(ctx, devstack.Options{Replicas: 1, Redis: devstack.RedisCluster, RedisReplicas: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	client, err := ryw.NewRedisClient(s.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cluster := client.(*redis.ClusterClient)
	tracker := ryw.NewRedisTracker(client, ryw.TrackerConfig{TTL: time.Minute, WAL: ryw.PrimaryWAL{DB: openPool(t, s.Primary.URL)}, Logger: quiet()})

	// The first lookup starts the epoch; its floor is the primary's
	// position now.
	before, err := tracker.Lookup(ctx, "nobody", false)
	if err != nil {
		t.Fatal(err)
	}
	epochNode, err := cluster.MasterForKey(ctx, ryw.EpochKey)
	if err != nil {
		t.Fatal(err)
	}
	epochAddr := epochNode.Options().Addr
	masterOf := func(key string) string {
		m, err := cluster.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	// A user whose two marks live on a master other than the epoch's; and
	// a user (split) whose token lives there too but whose time mark lives
	// on another master, and survives: lsn mode, which reads the token
	// alone, no longer sees a time mark without its token, and relies on
	// the epoch to find the loss.
	user, userAddr := "", ""
	for i := 0; user == ""; i++ {
		u := fmt.Sprint("cluster-loss-", i)
		if a := masterOf(ryw.MarkerKey(u)); a == masterOf(ryw.TokenKey(u)) && a != epochAddr {
			user, userAddr = u, a
		}
	}
	split := ""
	for i := 0; split == ""; i++ {
		u := fmt.Sprint("cluster-loss-split-", i)
		if masterOf(ryw.TokenKey(u)) == userAddr && masterOf(ryw.MarkerKey(u)) != userAddr {
			split = u
		}
	}

	// The user writes, after the epoch began.
	if err := s.Primary.Exec(ctx, "CREATE TABLE IF NOT EXISTS cluster_loss (v int); INSERT INTO cluster_loss VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var text string
	if err := openPool(t, s.Primary.URL).QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&text); err != nil {
		t.Fatal(err)
	}
	written, err := ryw.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{user, split} {
		if _, err := tracker.Record(ctx, u, tl1(written)); err != nil {
			t.Fatal(err)
		}
		if m, err := tracker.Lookup(ctx, u, false); err != nil || m.Token.LSN != written {
			t.Fatalf("before the restart: Lookup(%s) = %+v, %v; want its token %s", u, m, err, written)
		}
	}
	if before.Floor >= written {
		t.Fatalf("control: the epoch's floor %s is already past the write %s; the test shows nothing", before.Floor, written)
	}

	// Its master restarts empty, at the same address, owning the same slots.
	var node *devstack.Redis
	for _, r := range s.RedisNodes {
		if r.Addr() == userAddr {
			node = r
		}
	}
	if node == nil {
		t.Fatalf("no devstack node at %s", userAddr)
	}
	if err := node.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}

	// Poll until the tracker reads the node again (its old connections
	// fail first).
	var after ryw.Marks
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err = tracker.Lookup(ctx, user, false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tracker did not read the restarted node again: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if after.Token.LSN != 0 {
		t.Fatalf("after the restart the user's token is still %s: the node kept its marks, the test shows nothing", after.Token.LSN)
	}
	if after.Floor < written {
		t.Errorf("after the node lost the user's marks: floor %s, below the lost write %s (the floor before was %s): a replica that lacks the write could serve it",
			after.Floor, written, before.Floor)
	}

	// The split user: the token is gone, the time mark (on a master that
	// kept its keys) is there, and lsn mode's lookup is held to the floor.
	timed, err := tracker.Lookup(ctx, split, true)
	if err != nil || timed.Token.LSN != 0 || timed.WrittenAt.IsZero() {
		t.Fatalf("control: after the restart the split user's marks are %+v, %v; want the token lost and the time mark kept", timed, err)
	}
	if m, err := tracker.Lookup(ctx, split, false); err != nil || m.Floor < written {
		t.Errorf("the split user, as lsn mode reads it: %+v, %v; want a floor at or past the lost write %s", m, err, written)
	}
}
