package ryw_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// TestMonitorSaysWhetherItMayReadTheTimelineHistory: the monitor works for
// a role that is not a superuser and holds nothing but SELECT on the fence
// and its acknowledgements,
// and says, before any failover, that it may not read the timeline history.
// A grant of pg_read_file is seen at the next poll, and so is its revoke.
// Control: the superuser may read it.
func TestMonitorSaysWhetherItMayReadTheTimelineHistory(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	role, as := newRole(t, "plain", "GRANT SELECT ON ryw_fence TO %s", "GRANT SELECT, INSERT, UPDATE, DELETE ON ryw_fence_ack TO %s")
	m := ryw.NewMonitor(openPool(t, as(stack.Primary.URL)), []ryw.NodeDB{{Name: "replica1", DB: openPool(t, as(stack.Replicas[0].URL))}}, time.Hour, quiet())
	m.Poll(ctx)
	if c := m.Cluster(); c.Timeline != 1 || c.System == "" {
		t.Fatalf("the primary as %s: %+v; want it seen, on timeline 1", role, c)
	}
	if st := m.Status()[0]; !st.Healthy || st.Timeline != 1 {
		t.Errorf("replica1 as %s: %+v; want healthy on timeline 1", role, st)
	}
	if got := m.HistoryError(); got != ryw.ErrHistoryNotGranted.Error() {
		t.Errorf("HistoryError without the grant = %q; want %q", got, ryw.ErrHistoryNotGranted)
	}
	// Without pg_read_all_stats the role cannot see the replica's startup
	// process, so it cannot tell the replica's runs apart: its reads are
	// measured, not pinned. With the grant, on a new connection, pinned.
	read := func() *ryw.Observation {
		db := openMeasured(t, as(stack.Replicas[0].URL), true, "replica1")
		ctx, obs := measuredContext(t, "replica1")
		scanAll(t, ctx, db, "SELECT 1")
		return obs
	}
	obs := read()
	if _, inc, _ := obs.Pinned(); inc != 0 {
		t.Errorf("as %s without pg_read_all_stats: pinned to run %v; want measured", role, inc)
	}
	if seen, complete := obs.Seen(); seen.IsZero() || !complete {
		t.Errorf("as %s without pg_read_all_stats: measured %+v (complete %v); want a position", role, seen, complete)
	}
	if err := stack.Primary.Exec(ctx, "GRANT pg_read_all_stats TO "+role); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	if _, inc, _ := read().Pinned(); inc == 0 {
		t.Errorf("as %s with pg_read_all_stats: not pinned; want the replica's run", role)
	}

	grant := "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO " + role
	if err := stack.Primary.Exec(ctx, grant); err != nil {
		t.Fatal(err)
	}
	m.Poll(ctx)
	if got := m.HistoryError(); got != "" {
		t.Errorf("HistoryError after %q = %q; want none", grant, got)
	}
	if err := stack.Primary.Exec(ctx, "REVOKE EXECUTE ON FUNCTION pg_read_file(text) FROM "+role); err != nil {
		t.Fatal(err)
	}
	m.Poll(ctx)
	if got := m.HistoryError(); got != ryw.ErrHistoryNotGranted.Error() {
		t.Errorf("HistoryError after the revoke = %q; want %q", got, ryw.ErrHistoryNotGranted)
	}

	super := ryw.NewMonitor(openPool(t, stack.Primary.URL), nil, time.Hour, quiet())
	super.Poll(ctx)
	if c, got := super.Cluster(), super.HistoryError(); c.Timeline != 1 || got != "" {
		t.Errorf("as the superuser: timeline %d, HistoryError %q; want timeline 1 and none", c.Timeline, got)
	}
}

// TestStartUpNamesAMissingRedisPermission: a Redis user whose ACL denies
// PUBLISH (every record publishes its user for the instances' caches) or
// SUBSCRIBE (the cache's channel) stops New with ErrRedisPermission, which
// names the command, rather than leaving every write to the fence. The
// control, a user allowed both, starts.
func TestStartUpNamesAMissingRedisPermission(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	admin := redisAdmin(t)
	for _, tc := range []struct {
		name string
		deny []any
		want string
	}{
		{"allowed", nil, ""},
		{"no publish", []any{"-publish"}, "PUBLISH on ryw:marks"},
		{"no subscribe", []any{"-subscribe"}, "SUBSCRIBE to ryw:marks"},
		// The mark cache's barriers go on a channel of each process's own.
		{"the marks channel alone", []any{"resetchannels", "&" + ryw.MarksChannel}, "ryw:marks:barrier:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := fmt.Sprintf("ryw_%d_%d", os.Getpid(), seq.Add(1))
			rules := []any{"ACL", "SETUSER", user, "reset", "on", ">secret", "~*", "&*", "+@all"}
			rules = append(rules, tc.deny...)
			if err := admin.Do(ctx, rules...).Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
			cfg := onStack(ryw.Config{})
			cfg.Redis = strings.Replace(stack.Redis.URL, "redis://", "redis://"+user+":secret@", 1)
			rw, err := ryw.New(ctx, cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New as a user allowed everything: %v", err)
				}
				rw.Close()
				return
			}
			if err == nil {
				rw.Close()
				t.Fatalf("New as a user denied %s started", tc.want)
			}
			if !errors.Is(err, ryw.ErrRedisPermission) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New as a user denied %s = %v; want ErrRedisPermission naming it", tc.want, err)
			}
		})
	}
}

// TestAnInstanceThatCannotAcknowledgeRoutesByNoFence: a role that may read
// the fence but not write its acknowledgement (ryw_fence_ack) must not
// route by the fence, since fenced writes do not wait for it: the monitor
// reports no confirmed fence, and own-write reads go to the primary
// (fence-unknown). Control: the same role, granted the acknowledgement,
// routes by it.
func TestAnInstanceThatCannotAcknowledgeRoutesByNoFence(t *testing.T) {
	needStack(t)
	ctx := t.Context()
	role, as := newRole(t, "noack", "GRANT SELECT ON ryw_fence TO %s")
	url := as(stack.Primary.URL)
	for _, granted := range []bool{false, true} {
		if granted {
			if err := stack.Primary.Exec(ctx, "GRANT SELECT, INSERT, UPDATE, DELETE ON ryw_fence_ack TO "+role); err != nil {
				t.Fatal(err)
			}
		}
		m := ryw.NewMonitor(openPool(t, url), nil, time.Hour, quiet())
		m.Poll(ctx)
		_, asOf := m.Fence()
		if confirmed := !asOf.IsZero(); confirmed != granted {
			t.Errorf("acknowledgement granted %v: fence confirmed %v; want %v", granted, confirmed, granted)
		}
	}
}

// newRole creates a login role named after prefix, granted each of grants
// (each with %s for the role), dropped when the test ends, and waits until
// the replicas have it. as turns one of the stack's URLs into the role's.
func newRole(t *testing.T, prefix string, grants ...string) (role string, as func(url string) string) {
	t.Helper()
	ctx := t.Context()
	role = fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), seq.Add(1))
	stmts := []string{"CREATE ROLE " + role + " LOGIN"}
	for _, g := range grants {
		stmts = append(stmts, fmt.Sprintf(g, role))
	}
	for _, stmt := range stmts {
		if err := stack.Primary.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = stack.Primary.Exec(ctx, "DROP OWNED BY "+role)
		_ = stack.Primary.Exec(ctx, "DROP ROLE "+role)
	})
	if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	return role, func(url string) string {
		return strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1)
	}
}
