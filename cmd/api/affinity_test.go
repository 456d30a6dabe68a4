package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
)

// TestSessionAffinity: a client that sends its token back is served by one
// replica for as long as that replica runs, and by none that may show it
// less. The API reaches its only replica through a TCP proxy; a writer
// keeps changing product 1. The client reads the catalog on replica1, then
// the proxy's address moves to replica2, whose replay is paused well
// behind what the client saw: to the API, its replica restarted and came
// back behind. With monotonic reads the pin no longer holds (another
// server run) and nothing goes back in time; the control
// (RYW_MONOTONIC=false) reads the old version.
func TestSessionAffinity(t *testing.T) {
	if os.Getenv("RYW_TEST_POOLER") != "" {
		t.Skip("behind a pooler, sessions are measured, not pinned (see docs/SESSIONS.md)")
	}
	user := uuid.New()
	api0, _ := startRun(t, stackEnv(t))
	saveProfile(t, api0, user, "v0")
	r1, r2 := stack.Replica("replica1"), stack.Replica("replica2")
	versionWriter(t, user)
	for _, tt := range []struct {
		name      string
		monotonic bool
	}{
		{"lsn", true},
		{"lsn, floor off (control)", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proxy, err := devstack.StartProxy(net.JoinHostPort("127.0.0.1", strconv.Itoa(r1.Port)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxy.Close)
			replicaURL := strings.Replace(stack.ClientURL(r1), "127.0.0.1:"+strconv.Itoa(r1.Port), proxy.Addr, 1)
			api, _ := startRun(t, stackEnv(t, "RYW_MODE=lsn", "RYW_MONOTONIC="+strconv.FormatBool(tt.monotonic),
				"DATABASE_REPLICA_URLS=replica1="+replicaURL))
			waitReplicasUsable(t, api)
			c := &sessionClient{t: t, api: api, user: user}
			seen, where := 0, map[string]int{}
			for range 20 {
				r := c.read("/api/products")
				where[r.servedBy+" "+r.reason]++
				seen = max(seen, versionOf(t, "/api/products", r))
			}
			if tt.monotonic {
				if where["replica1 stale-ok"] != 20 {
					t.Fatalf("before the move: served by %v; want replica1 for every read", where)
				}
				if f := strings.Split(c.token, "."); len(f) != 8 || f[6] == "" {
					t.Fatalf("token %q carries no pin", c.token)
				}
			}
			// replica2 stops well behind what the client has seen.
			stack.PauseReplayForTest(t, r2)
			paused := desc(t, r2)
			waitFor(t, func() bool { return desc(t, r1) > paused+5 })
			for range 5 {
				seen = max(seen, versionOf(t, "/api/products", c.read("/api/products")))
			}
			if seen <= paused {
				t.Fatalf("the client saw v%d, not past paused replica2's v%d", seen, paused)
			}
			if err := proxy.Redirect(net.JoinHostPort("127.0.0.1", strconv.Itoa(r2.Port))); err != nil {
				t.Fatal(err)
			}
			// Until the monitor has seen the "restarted" replica back, reads
			// go to the primary for want of a replica.
			waitReplicasUsable(t, api)
			var regressions []string
			after := map[string]int{}
			for range 20 {
				r := c.read("/api/products")
				v := versionOf(t, "/api/products", r)
				after[r.servedBy+" "+r.reason]++
				if v < seen {
					regressions = append(regressions, fmt.Sprintf("v%d after v%d (%s, %s)", v, seen, r.servedBy, r.reason))
				}
				seen = max(seen, v)
			}
			t.Logf("served by, after the move: %v", after)
			switch {
			case tt.monotonic && len(regressions) > 0:
				t.Errorf("%d reads went back in time: %s", len(regressions), strings.Join(regressions, "; "))
			case tt.monotonic && after["primary session-moved"] == 0:
				t.Errorf("no read left the moved replica for the primary (session-moved): %v", after)
			case !tt.monotonic && len(regressions) == 0:
				t.Errorf("control: no read went back in time (%v); want the replaced replica's old versions", after)
			}
		})
	}
}

// desc returns the version of product 1's description on node n.
func desc(t *testing.T, n *devstack.Node) int {
	t.Helper()
	var d string
	if err := n.QueryRow(t.Context(), []any{&d}, "SELECT description FROM products WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.Atoi(strings.TrimPrefix(d, "v"))
	return v
}
