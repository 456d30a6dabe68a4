package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
)

// TestMonotonicReadsWhenAReplicaShowsACommitFirst: PostgreSQL can show a
// commit on a replica before the primary shows it. A committing backend
// streams its commit record, marks it in the commit log and waits for the
// synchronous standbys before it leaves the primary's running list; until
// then the replicas show the commit and a new snapshot on the primary does
// not. Here a synchronous standby that never answers (synchronous_standby_names
// names one that does not exist) holds an update of product 1 in that
// state: replica1, asynchronous, shows v2, the primary v1. A client reads
// v2 on replica1, then replica1 becomes unreachable and its reads go to
// the primary. With monotonic reads the primary read settles first: while
// the commit is held it fails with 503 unsettled, not v1; released during
// a read, the read waits and shows v2, in lsn and in time mode. Control
// (RYW_MONOTONIC=false): the same steps show v1 after v2.
func TestMonotonicReadsWhenAReplicaShowsACommitFirst(t *testing.T) {
	user := uuid.New()
	r1 := stack.Replica("replica1")
	ctx := context.WithoutCancel(t.Context())
	t.Cleanup(func() {
		if err := stack.Primary.Exec(ctx, "UPDATE products SET description = '' WHERE id = 1"); err != nil {
			t.Error(err)
		}
	})
	for _, tt := range []struct {
		name      string
		mode      string
		monotonic bool
	}{
		{"lsn", "lsn", true},
		{"time", "time", true},
		{"lsn, floor off (control)", "lsn", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proxy, replicaURL, err := devstack.StartProxyForURL(stack.ClientURL(r1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxy.Close)
			// The settle's longest wait is half the primary timeout: 3 s.
			// The hold also holds the monitor's fence acknowledgements, so
			// that the primary stays unconfirmed: catalog reads keep to
			// the replica meanwhile (RYW_STALE_READS_WITHOUT_PRIMARY), as
			// the steps need, instead of going to the primary once the
			// fence lease has run out.
			api, _ := startRun(t, stackEnv(t, "RYW_MODE="+tt.mode, "RYW_MONOTONIC="+strconv.FormatBool(tt.monotonic),
				"RYW_PRIMARY_TIMEOUT=6s", "RYW_STALE_READS_WITHOUT_PRIMARY=true", "DATABASE_REPLICA_URLS=replica1="+replicaURL))
			waitReplicasUsable(t, api)
			if err := stack.Primary.Exec(ctx, "UPDATE products SET description = 'v1' WHERE id = 1"); err != nil {
				t.Fatal(err)
			}
			if err := stack.WaitCaughtUp(ctx, r1); err != nil {
				t.Fatal(err)
			}
			c := &sessionClient{t: t, api: api, user: user}
			if r := c.read("/api/products"); r.servedBy != "replica1" || versionOf(t, "/api/products", r) != 1 {
				t.Fatalf("first read: %s; want v1 from replica1", r)
			}

			// Hold an update of product 1 after its commit record.
			release := holdCommits(t)
			held := make(chan error, 1)
			go func() {
				held <- stack.Primary.Exec(ctx, "UPDATE products SET description = 'v2' WHERE id = 1")
			}()
			waitFor(t, func() bool { return desc(t, r1) == 2 })
			if v := desc(t, stack.Primary); v != 1 {
				t.Fatalf("the primary shows v%d while its commit is held; want v1 (the anomaly this test needs)", v)
			}
			if r := c.read("/api/products"); r.servedBy != "replica1" || versionOf(t, "/api/products", r) != 2 {
				t.Fatalf("read on replica1 during the hold: %s; want v2", r)
			}

			// replica1 becomes unreachable: the client's reads go to the
			// primary.
			proxy.Close()
			before := scrape(t, api)
			r := c.read("/api/products")
			if !tt.monotonic {
				if r.status != http.StatusOK || r.servedBy != "primary" || versionOf(t, "/api/products", r) != 1 {
					t.Fatalf("control: %s; want v1 from the primary, after v2 from replica1", r)
				}
				t.Logf("control: v1 from the primary (%s) after v2 from replica1", r.reason)
				release()
				if err := <-held; err != nil {
					t.Fatal(err)
				}
				return
			}
			var body struct{ Error struct{ Code string } }
			_ = json.Unmarshal(r.body, &body)
			if r.status != http.StatusServiceUnavailable || body.Error.Code != "unsettled" || r.header.Get("Retry-After") == "" {
				t.Fatalf("read while the commit is held: %s; want 503 unsettled with Retry-After (not v1)", r)
			}

			// Released while a read waits: the read shows v2.
			answered := make(chan response, 1)
			go func() { answered <- c.read("/api/products") }()
			waitFor(t, func() bool { return settling(t) })
			release()
			if err := <-held; err != nil {
				t.Fatal(err)
			}
			r = <-answered
			if r.status != http.StatusOK || r.servedBy != "primary" || versionOf(t, "/api/products", r) != 2 {
				t.Fatalf("read released from its wait: %s; want v2 from the primary", r)
			}
			// (The counters are the process's: other APIs of this test
			// binary may only add to them.)
			after := scrape(t, api)
			for _, outcome := range []string{"unsettled", "waited"} {
				key := `ryw_primary_settles_total{outcome=` + outcome + `}`
				if after[key] < before[key]+1 {
					t.Errorf("%s went from %v to %v; want at least 1 more", key, before[key], after[key])
				}
			}
		})
	}
}

// holdCommits makes the primary's commits wait for a synchronous standby
// that does not exist: each is flushed, streamed to the replicas and
// marked committed, and stays in the primary's running list. The returned
// function (also run when the test ends) releases them.
func holdCommits(t *testing.T) (release func()) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	set := func(value string) error {
		if err := stack.Primary.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = '"+value+"'"); err != nil {
			return err
		}
		return stack.Primary.Exec(ctx, "SELECT pg_reload_conf()")
	}
	if err := set("ryw_absent_standby"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var v string
		if err := stack.Primary.QueryRow(ctx, []any{&v}, "SHOW synchronous_standby_names"); err != nil {
			t.Fatal(err)
		}
		return v == "ryw_absent_standby"
	})
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		if err := stack.Primary.Exec(ctx, "ALTER SYSTEM RESET synchronous_standby_names"); err != nil {
			t.Error(err)
		}
		if err := stack.Primary.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(release)
	return release
}

// settling reports whether a read is settling on the primary now.
func settling(t *testing.T) bool {
	t.Helper()
	var n int
	if err := stack.Primary.QueryRow(t.Context(), []any{&n},
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '/* ryw settle */%'"); err != nil {
		t.Fatal(err)
	}
	return n > 0
}
