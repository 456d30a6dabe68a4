package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// delayReplica makes replica apply WAL `delay` late (recovery_min_apply_delay)
// until the test ends.
func delayReplica(t *testing.T, name string, delay time.Duration) {
	t.Helper()
	r := stack.Replica(name)
	ctx := context.WithoutCancel(t.Context())
	for _, sql := range []string{fmt.Sprintf("ALTER SYSTEM SET recovery_min_apply_delay = '%dms'", delay.Milliseconds()), "SELECT pg_reload_conf()"} {
		if err := r.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, sql := range []string{"ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"} {
			if err := r.Exec(ctx, sql); err != nil {
				t.Error(err)
			}
		}
		if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
			t.Error(err)
		}
	})
}

// versionWriter changes, on the primary and outside the API (another
// service, an operator), product 1's description and user's name to
// "v<n>", n rising, until the test ends.
func versionWriter(t *testing.T, user uuid.UUID) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	conn, err := stack.Primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		conn.Close(context.Background())
		if err := stack.Primary.Exec(context.Background(), "UPDATE products SET description = '' WHERE id = 1"); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		for n := 1; ctx.Err() == nil; n++ {
			v := "v" + strconv.Itoa(n)
			if _, err := conn.Exec(ctx, "UPDATE products SET description = $1 WHERE id = 1", v); err != nil {
				return
			}
			if _, err := conn.Exec(ctx, "UPDATE users SET name = $1 WHERE id = $2", v, user); err != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// sessionRead is one read of a client that sends back the token of the
// previous response, as a browser does with the cookie.
type sessionClient struct {
	t     *testing.T
	api   string
	user  uuid.UUID
	token string
}

func (c *sessionClient) read(path string) response {
	c.t.Helper()
	r := do(c.t, http.MethodGet, c.api+path, c.user, "", nil, func(req *http.Request) {
		if c.token != "" {
			req.Header.Set("X-RYW-Token", c.token)
		}
	})
	if tok := r.header.Get("X-RYW-Token"); tok != "" {
		c.token = tok
	}
	return r
}

// versionOf returns the version a read of path showed: the user's name, or
// product 1's description.
func versionOf(t *testing.T, path string, r response) int {
	t.Helper()
	var text string
	if path == "/api/me" {
		text = nameIn(t, r)
	} else {
		var list struct {
			Products []struct {
				ID          int64
				Description string
			}
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
			t.Fatalf("GET %s = %s", path, r)
		}
		for _, p := range list.Products {
			if p.ID == 1 {
				text = p.Description
			}
		}
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(text, "v"))
	return n
}

// TestMonotonicReads is the session floor: replica2 applies WAL 2 s late
// while the primary's data keeps changing, and a client reads the catalog
// and its profile in turn, sending back each response's token. With the
// floor its versions never decrease, whichever replica the reads could go
// to, and the catalog stays on replicas. Control: RYW_MONOTONIC=false, the
// same reads see versions go back in time.
func TestMonotonicReads(t *testing.T) {
	user := uuid.New()
	api0, _ := startRun(t, stackEnv(t))
	saveProfile(t, api0, user, "v0")
	if err := stack.WaitCaughtUp(t.Context(), stack.Replicas...); err != nil {
		t.Fatal(err)
	}
	delayReplica(t, "replica2", 2*time.Second)
	versionWriter(t, user)
	// Wait until replica2 is well behind before anything is read.
	desc := func(name string) int {
		var d string
		n := stack.Primary
		if name != "primary" {
			n = stack.Replica(name)
		}
		if err := n.QueryRow(t.Context(), []any{&d}, "SELECT description FROM products WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.Atoi(strings.TrimPrefix(d, "v"))
		return v
	}
	waitFor(t, func() bool { return desc("primary")-desc("replica2") >= 20 })
	for _, tt := range []struct {
		name string
		env  []string
		// monotonic: the floor is on and no read may go back.
		monotonic bool
	}{
		{"lsn", []string{"RYW_MODE=lsn"}, true},
		{"time", []string{"RYW_MODE=time", "RYW_WINDOW=100ms"}, true},
		{"lsn, floor off (control)", []string{"RYW_MODE=lsn", "RYW_MONOTONIC=false"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api, _ := startRun(t, stackEnv(t, tt.env...))
			waitReplicasUsable(t, api)
			c := &sessionClient{t: t, api: api, user: user}
			last := map[string]int{}
			var regressions, served []string
			replicas, where := map[string]int{}, map[string]int{}
			for i := range 80 {
				path := []string{"/api/products", "/api/me"}[i%2]
				r := c.read(path)
				v := versionOf(t, path, r)
				if v < last[path] {
					regressions = append(regressions, fmt.Sprintf("%s v%d after v%d (from %s, %s)", path, v, last[path], r.servedBy, r.reason))
				}
				last[path] = max(last[path], v)
				served = append(served, r.servedBy)
				where[r.servedBy+" "+r.reason]++
				if path == "/api/products" && strings.HasPrefix(r.servedBy, "replica") {
					replicas[r.servedBy]++
				}
				time.Sleep(10 * time.Millisecond)
			}
			switch {
			case !tt.monotonic && len(regressions) == 0:
				t.Errorf("control: no read went back in time over %v; want some, from the delayed replica2", served)
			case tt.monotonic && len(regressions) > 0:
				t.Errorf("%d reads went back in time: %s", len(regressions), strings.Join(regressions, "; "))
			case tt.monotonic && replicas["replica1"] == 0:
				t.Errorf("no catalog read was served by replica1 (served by %v); want the stale-ok reads kept on a replica past the floor", served)
			}
			t.Logf("served by: %v", where)
			if !tt.monotonic && len(regressions) > 0 {
				t.Logf("control: %d regressions, e.g. %s", len(regressions), regressions[0])
			}
		})
	}
}
