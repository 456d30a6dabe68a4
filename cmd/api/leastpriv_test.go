package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/ryw"
	"github.com/ryw-go/ryw/services"
)

// TestLeastPrivilege runs the service as devstack.AppRole, a role that is
// not a superuser and holds only devstack.AppGrants (docs/OPERATIONS.md),
// on a stack of its own (it fails over at the end):
//   - the role is what it says, and may not do more;
//   - /readyz (and /metrics) say when the role may not read the primary's
//     timeline history (pg_read_file), and stop saying it once granted;
//   - with the replicas paused, own writes are read back fresh in time and
//     lsn mode, and stale in the control (RYW_MODE=off);
//   - after a failover, without pg_read_file, a read that must show a
//     write of the earlier timeline goes to the primary (timeline-unknown);
//     once granted, the same kind of read is served by a replica.
func TestLeastPrivilege(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stack of its own and fails it over")
	}
	ctx := t.Context()
	s, err := devstack.Start(ctx, devstack.Options{Replicas: 2, Migrate: true, LeastPrivilege: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The minimal grants: the timeline history unreadable.
	if err := s.GrantReadFile(ctx, false); err != nil {
		t.Fatal(err)
	}
	env := func(mode string, extra ...string) map[string]string {
		e := map[string]string{
			"HTTP_ADDR": "127.0.0.1:" + freePort(t), "DATABASE_URL": s.PrimaryURLs(),
			"DATABASE_REPLICA_URLS": s.ReplicaURLs(), "REDIS_URL": s.Redis.URL,
			"RYW_MODE": mode, "RYW_PRIMARY_TIMEOUT": "2s",
		}
		if testAuth == "jwt" {
			extra = append(jwtEnv(), extra...)
		}
		for _, kv := range extra {
			k, v, _ := strings.Cut(kv, "=")
			e[k] = v
		}
		return e
	}
	if u := env("lsn")["DATABASE_URL"]; !strings.Contains(u, "://"+devstack.AppRole+"@") {
		t.Fatalf("DATABASE_URL %s does not connect as %s", u, devstack.AppRole)
	}
	// lsn's /readyz has the details (the warning's cause); time's is public.
	apis := map[string]string{}
	for _, mode := range []string{"time", "lsn", "off"} {
		var extra []string
		if mode == "lsn" {
			extra = append(extra, "READYZ_DETAILS=true")
		}
		apis[mode], _ = startRun(t, env(mode, extra...))
	}
	for _, api := range apis {
		waitReplicasUsable(t, api)
	}

	t.Run("the role", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, s.ClientURL(s.Primary))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var user string
		var super, createRole, createDB, replication, bypassRLS bool
		if err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
			FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super, &createRole, &createDB, &replication, &bypassRLS); err != nil {
			t.Fatal(err)
		}
		if user != devstack.AppRole || super || createRole || createDB || replication || bypassRLS {
			t.Errorf("the API's role: %s, superuser %v, createrole %v, createdb %v, replication %v, bypassrls %v; want %s with none of them",
				user, super, createRole, createDB, replication, bypassRLS, devstack.AppRole)
		}
		for _, stmt := range []string{
			"CREATE TABLE intruder (id int)",
			"CREATE TEMP TABLE intruder (id int)",
			"DELETE FROM users",
			"UPDATE products SET name = name",
			"DROP TABLE ryw_fence",
			"SELECT pg_read_file('postgresql.conf')",
		} {
			_, err := conn.Exec(ctx, stmt)
			if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("%s as %s: %v; want refused (42501)", stmt, user, err)
			}
		}
	})

	// warnings returns the API's /readyz warnings, failing unless it
	// answers 200: a missing grant never makes the service unavailable.
	warnings := func(t *testing.T, api string) []services.Warning {
		t.Helper()
		code, r := readyz(t, api)
		if code != http.StatusOK {
			t.Fatalf("/readyz = %d %+v; want 200", code, r)
		}
		return r.Warnings
	}
	historyWarned := func(t *testing.T, api string) bool {
		t.Helper()
		return slices.ContainsFunc(warnings(t, api), func(w services.Warning) bool { return w.Code == services.WarnTimelineHistory })
	}

	t.Run("readyz shows the missing pg_read_file grant", func(t *testing.T) {
		for _, mode := range []string{"time", "lsn"} {
			code, r := readyz(t, apis[mode])
			if code != http.StatusOK || r.Status != services.StatusReady {
				t.Errorf("%s: /readyz without the grant = %d %s; want 200 ready: the service works", mode, code, r.Status)
			}
			ws := r.Warnings
			if len(ws) != 1 || ws[0].Code != services.WarnTimelineHistory || !strings.Contains(ws[0].Message, "pg_read_file(text)") {
				t.Fatalf("%s: /readyz warnings without the grant = %+v; want %s, naming the grant", mode, ws, services.WarnTimelineHistory)
			}
			wantCause := map[string]string{"time": "", "lsn": ryw.ErrHistoryNotGranted.Error()}[mode]
			if ws[0].Error != wantCause {
				t.Errorf("%s: the warning's cause = %q; want %q (only with READYZ_DETAILS)", mode, ws[0].Error, wantCause)
			}
			m := scrape(t, apis[mode])
			if m["ryw_timeline_history_readable{}"] != 0 {
				t.Errorf("%s: ryw_timeline_history_readable = %v; want 0", mode, m["ryw_timeline_history_readable{}"])
			}
			// The role's grants include the fence's acknowledgements.
			if m["ryw_fence_acknowledged{}"] != 1 {
				t.Errorf("%s: ryw_fence_acknowledged = %v; want 1", mode, m["ryw_fence_acknowledged{}"])
			}
		}
		// Granted, it is seen at the next poll: no warning, no restart.
		if err := s.GrantReadFile(ctx, true); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"time", "lsn"} {
			waitFor(t, func() bool { return len(warnings(t, apis[mode])) == 0 })
			if m := scrape(t, apis[mode]); m["ryw_timeline_history_readable{}"] != 1 {
				t.Errorf("%s: ryw_timeline_history_readable with the grant = %v; want 1", mode, m["ryw_timeline_history_readable{}"])
			}
		}
		if err := s.GrantReadFile(ctx, false); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"time", "lsn"} {
			waitFor(t, func() bool { return historyWarned(t, apis[mode]) })
		}
	})

	t.Run("own writes with the replicas paused", func(t *testing.T) {
		users := map[string]uuid.UUID{}
		for mode, api := range apis {
			users[mode] = uuid.New()
			saveProfile(t, api, users[mode], "Old Name")
		}
		if err := s.WaitCaughtUp(ctx, s.Replicas...); err != nil {
			t.Fatal(err)
		}
		s.PauseReplayForTest(t, s.Replicas...)
		for _, tt := range []struct {
			mode, reason string
			fresh        bool
		}{
			{"time", "recent-write", true},
			{"lsn", "replicas-behind", true},
			{"off", "ryw-off", false}, // the control
		} {
			api, user := apis[tt.mode], users[tt.mode]
			if w := saveProfile(t, api, user, "New Name"); w.servedBy != "primary" {
				t.Errorf("%s: write = %s", tt.mode, w)
			}
			r := getMe(t, api, user)
			got := nameIn(t, r)
			switch {
			case tt.fresh && (got != "New Name" || r.servedBy != "primary" || r.reason != tt.reason):
				t.Errorf("%s: read after write = %s; want the new name from the primary (%s)", tt.mode, r, tt.reason)
			case !tt.fresh && (got != "Old Name" || !strings.HasPrefix(r.servedBy, "replica") || r.reason != tt.reason):
				t.Errorf("control (%s): read after write = %s; want the stale name from a replica (%s)", tt.mode, r, tt.reason)
			}
		}
	})

	t.Run("own writes from a caught-up replica", func(t *testing.T) {
		// The replay check runs as the role, on the replica's connection.
		waitFor(t, func() bool {
			user := uuid.New()
			saveProfile(t, apis["lsn"], user, "fresh")
			r := getMe(t, apis["lsn"], user)
			return strings.HasPrefix(r.servedBy, "replica") && r.reason == "lsn-caught-up" && nameIn(t, r) == "fresh"
		})
	})

	t.Run("after a failover", func(t *testing.T) {
		api := apis["lsn"]
		before, granted := uuid.New(), uuid.New()
		for _, u := range []uuid.UUID{before, granted} {
			saveProfile(t, api, u, "before")
		}
		if err := s.WaitCaughtUp(ctx, s.Replicas...); err != nil {
			t.Fatal(err)
		}
		res, err := s.FailoverWith(ctx, devstack.FailoverOptions{Promote: "replica1"})
		if err != nil {
			t.Fatal(err)
		}
		// The API follows: its pools reach the new primary (another user's
		// write succeeds), its monitor is on the new timeline, and replica2,
		// streaming from it, is back in rotation.
		waitFor(t, func() bool {
			return do(t, http.MethodPost, api+"/api/me/profile", uuid.New(), "application/json", strings.NewReader(`{"email":"u@example.com","name":"x"}`)).status == http.StatusOK
		})
		waitFor(t, func() bool { return scrape(t, api)["ryw_primary_timeline{}"] == float64(res.Timeline) })
		waitFor(t, func() bool {
			return do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil).servedBy == "replica2"
		})
		// The user's mark is of timeline 1: unplaceable without the
		// history, so the read goes to the primary although replica2 has
		// the write.
		r := getMe(t, api, before)
		if nameIn(t, r) != "before" || r.servedBy != "primary" || r.reason != string(ryw.ReasonTimelineUnknown) {
			t.Errorf("read of a write made before the failover, without pg_read_file = %s; want it from the primary (%s)", r, ryw.ReasonTimelineUnknown)
		}
		if !historyWarned(t, api) {
			t.Errorf("/readyz after the failover does not warn of the unreadable history")
		}
		// The control: granted, the history places the mark, and a
		// caught-up replica serves the same kind of read.
		if err := s.GrantReadFile(ctx, true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return !historyWarned(t, api) })
		waitFor(t, func() bool {
			r := getMe(t, api, granted)
			return nameIn(t, r) == "before" && r.servedBy == "replica2" && r.reason == "lsn-caught-up"
		})
	})
}
