package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

const primary = "postgres://app:s3cret@db:5432/ryw?sslmode=disable"

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(env(map[string]string{"DATABASE_URL": primary}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		HTTPAddr: DefaultHTTPAddr, DatabaseURL: primary, RedisURL: DefaultRedisURL,
		Mode: ryw.ModeTime, Window: 5 * time.Second, MarkerTTL: 10 * time.Minute,
		LogLevel: slog.LevelInfo, LogFormat: "text", ShutdownWait: 10 * time.Second,
	}
	if cfg.HTTPAddr != want.HTTPAddr || cfg.DatabaseURL != want.DatabaseURL || cfg.RedisURL != want.RedisURL ||
		cfg.Mode != want.Mode || cfg.Window != want.Window || cfg.MarkerTTL != want.MarkerTTL ||
		cfg.LogLevel != want.LogLevel || cfg.LogFormat != want.LogFormat || cfg.ShutdownWait != want.ShutdownWait ||
		len(cfg.Replicas) != 0 {
		t.Errorf("Load defaults = %+v, want %+v", cfg, want)
	}
}

func TestLoadAdmissionLimit(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		inFlight int
		wait     time.Duration
	}{
		{"a pool's worth per node, the primary alone", map[string]string{}, DefaultConnsPerNode, DefaultQueueWait},
		{"a pool's worth per node, with two replicas", map[string]string{"DATABASE_REPLICA_URLS": "postgres://r1/ryw,postgres://r2/ryw"}, 3 * DefaultConnsPerNode, DefaultQueueWait},
		{"set", map[string]string{"MAX_IN_FLIGHT": "200", "MAX_QUEUE_WAIT": "500ms"}, 200, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["DATABASE_URL"] = primary
			cfg, err := Load(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxInFlight != tt.inFlight || cfg.QueueWait != tt.wait {
				t.Errorf("MaxInFlight, QueueWait = %d, %s; want %d, %s", cfg.MaxInFlight, cfg.QueueWait, tt.inFlight, tt.wait)
			}
		})
	}
}

func TestLoadAuth(t *testing.T) {
	cfg, err := Load(env(map[string]string{"DATABASE_URL": primary}))
	if err != nil || cfg.Auth.Mode != AuthDemo {
		t.Errorf("default auth = %+v, %v; want demo", cfg.Auth, err)
	}
	cfg, err = Load(env(map[string]string{"DATABASE_URL": primary, "AUTH_MODE": "jwt",
		"AUTH_JWKS_URL": "https://issuer.example.com/.well-known/jwks.json", "AUTH_ISSUER": "https://issuer.example.com/", "AUTH_AUDIENCE": "ryw-api"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Auth{Mode: AuthJWT, JWKSURL: "https://issuer.example.com/.well-known/jwks.json", Issuer: "https://issuer.example.com/", Audience: "ryw-api",
		Leeway: DefaultAuthLeeway, JWKSRefresh: DefaultJWKSRefresh, JWKSMinRefresh: DefaultJWKSMinRefresh}
	if cfg.Auth != want {
		t.Errorf("jwt auth = %+v, want %+v", cfg.Auth, want)
	}
}

func TestLoadReplicas(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want []Replica
	}{
		{"positional names", "postgres://r1:5432/ryw?sslmode=disable, postgres://r2:5432/ryw",
			[]Replica{{"replica1", "postgres://r1:5432/ryw?sslmode=disable"}, {"replica2", "postgres://r2:5432/ryw"}}},
		{"explicit names", "east=postgres://r1/ryw?sslmode=disable,west=postgresql://u:p@r2/ryw",
			[]Replica{{"east", "postgres://r1/ryw?sslmode=disable"}, {"west", "postgresql://u:p@r2/ryw"}}},
		{"mixed", "postgres://r1/ryw,slow=postgres://r2/ryw",
			[]Replica{{"replica1", "postgres://r1/ryw"}, {"slow", "postgres://r2/ryw"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(env(map[string]string{"DATABASE_URL": primary, "DATABASE_REPLICA_URLS": tt.raw}))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(cfg.Replicas) != len(tt.want) {
				t.Fatalf("replicas = %+v, want %+v", cfg.Replicas, tt.want)
			}
			for i := range tt.want {
				if cfg.Replicas[i] != tt.want[i] {
					t.Errorf("replica %d = %+v, want %+v", i, cfg.Replicas[i], tt.want[i])
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // the whole message must contain this
	}{
		{"missing primary", map[string]string{}, "DATABASE_URL is required"},
		{"primary not a URL", map[string]string{"DATABASE_URL": "host=db user=app"}, "DATABASE_URL must be a postgres:// URL"},
		{"primary no host", map[string]string{"DATABASE_URL": "postgres:///ryw"}, "DATABASE_URL must name a host"},
		{"negative window", map[string]string{"RYW_WINDOW": "-1s"}, `RYW_WINDOW must be a positive duration, got "-1s"`},
		{"garbage window", map[string]string{"RYW_WINDOW": "soon"}, `RYW_WINDOW must be a positive duration, got "soon"`},
		{"zero ttl", map[string]string{"RYW_MARKER_TTL": "0s"}, `RYW_MARKER_TTL must be a positive duration, got "0s"`},
		{"ttl below window", map[string]string{"RYW_WINDOW": "10s", "RYW_MARKER_TTL": "5s"}, "RYW_MARKER_TTL (5s) must be at least RYW_WINDOW (10s)"},
		{"negative max wait", map[string]string{"RYW_MAX_WAIT": "-5ms"}, `RYW_MAX_WAIT must be a duration of 0 or more, got "-5ms"`},
		{"unknown writes on replicas in time mode", map[string]string{"RYW_UNKNOWN_WRITES": "replica"}, `RYW_UNKNOWN_WRITES=replica needs RYW_MODE=lsn, got "time"`},
		{"bad unknown writes", map[string]string{"RYW_MODE": "lsn", "RYW_UNKNOWN_WRITES": "replicas"}, `RYW_UNKNOWN_WRITES must be one of primary|replica, got "replicas"`},
		{"zero poll interval", map[string]string{"RYW_POLL_INTERVAL": "0s"}, `RYW_POLL_INTERVAL must be a positive duration`},
		{"bad pprof address", map[string]string{"PPROF_ADDR": "6060"}, "PPROF_ADDR must be host:port"},
		{"short token key", map[string]string{"RYW_TOKEN_KEY": "secret"}, "RYW_TOKEN_KEY must be at least 32 bytes"},
		{"bad auth mode", map[string]string{"AUTH_MODE": "oauth"}, `AUTH_MODE must be one of demo|jwt, got "oauth"`},
		{"jwt without its settings", map[string]string{"AUTH_MODE": "jwt"}, "AUTH_JWKS_URL must be the issuer's JWKS URL"},
		{"jwt without an issuer", map[string]string{"AUTH_MODE": "jwt", "AUTH_JWKS_URL": "https://i.example/jwks", "AUTH_AUDIENCE": "api"}, "AUTH_ISSUER is required"},
		{"jwt without an audience", map[string]string{"AUTH_MODE": "jwt", "AUTH_JWKS_URL": "https://i.example/jwks", "AUTH_ISSUER": "https://i.example/"}, "AUTH_AUDIENCE is required"},
		{"jwks not http", map[string]string{"AUTH_MODE": "jwt", "AUTH_JWKS_URL": "file:///etc/jwks.json", "AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a"}, "AUTH_JWKS_URL must be"},
		{"huge leeway", map[string]string{"AUTH_MODE": "jwt", "AUTH_JWKS_URL": "https://i.example/jwks", "AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a", "AUTH_LEEWAY": "1h"}, "AUTH_LEEWAY must be at most 5m"},
		{"no fetch limit", map[string]string{"AUTH_MODE": "jwt", "AUTH_JWKS_URL": "https://i.example/jwks", "AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a", "AUTH_JWKS_MIN_REFRESH": "0s"}, "AUTH_JWKS_MIN_REFRESH must be at least 1s"},
		{"bad live page", map[string]string{"LIVE_PAGE": "yes"}, `LIVE_PAGE must be one of true|false, got "yes"`},
		{"bad lab url", map[string]string{"RYW_LAB_URL": "ftp://x"}, "RYW_LAB_URL must be devstack's lab"},
		{"jwt settings in demo mode", map[string]string{"AUTH_JWKS_URL": "https://i.example/jwks"}, `AUTH_JWKS_URL is set but AUTH_MODE is "demo"`},
		{"poll interval beyond the lease", map[string]string{"RYW_POLL_INTERVAL": "500ms"}, `RYW_POLL_INTERVAL must be at most 60ms (a fifth of RYW_FENCE_LEASE, 300ms), got 500ms`},
		{"poll interval beyond a longer lease", map[string]string{"RYW_POLL_INTERVAL": "250ms", "RYW_FENCE_LEASE": "1s"}, `RYW_POLL_INTERVAL must be at most 200ms (a fifth of RYW_FENCE_LEASE, 1s), got 250ms`},
		{"zero fence lease", map[string]string{"RYW_FENCE_LEASE": "0s"}, `RYW_FENCE_LEASE must be a positive duration`},
		{"no requests in flight", map[string]string{"MAX_IN_FLIGHT": "0"}, `MAX_IN_FLIGHT must be a whole number of 1 or more, got "0"`},
		{"requests in flight not a number", map[string]string{"MAX_IN_FLIGHT": "lots"}, `MAX_IN_FLIGHT must be a whole number of 1 or more, got "lots"`},
		{"zero queue wait", map[string]string{"MAX_QUEUE_WAIT": "0s"}, `MAX_QUEUE_WAIT must be a positive duration`},
		{"bad mode", map[string]string{"RYW_MODE": "eventual"}, `RYW_MODE must be one of time|lsn|off, got "eventual"`},
		{"bad redis", map[string]string{"REDIS_URL": "http://cache:6379"}, "REDIS_URL must be a redis://"},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"},
		{"bad format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of text|json"},
		{"replica not a URL", map[string]string{"DATABASE_REPLICA_URLS": "postgres://r1/ryw,r2:5432"}, "DATABASE_REPLICA_URLS item 2 must be a postgres:// URL"},
		{"replica empty item", map[string]string{"DATABASE_REPLICA_URLS": "postgres://r1/ryw,,postgres://r2/ryw"}, "DATABASE_REPLICA_URLS has an empty item at position 2"},
		{"replica duplicate", map[string]string{"DATABASE_REPLICA_URLS": "a=postgres://r1/ryw,a=postgres://r2/ryw"}, `DATABASE_REPLICA_URLS names "a" twice`},
		{"replica named primary", map[string]string{"DATABASE_REPLICA_URLS": "primary=postgres://r1/ryw"}, `the name "primary" is reserved`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := tt.env["DATABASE_URL"]; !ok && tt.name != "missing primary" {
				tt.env["DATABASE_URL"] = primary
			}
			_, err := Load(env(tt.env))
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q, want it to contain %q", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
		})
	}
}

func TestLoadReportsEveryProblemOnOneLine(t *testing.T) {
	_, err := Load(env(map[string]string{"RYW_WINDOW": "x", "RYW_MODE": "y"}))
	if err == nil {
		t.Fatal("Load succeeded with three bad variables")
	}
	for _, name := range []string{"DATABASE_URL", "RYW_WINDOW", "RYW_MODE"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestPasswordsNeverShown(t *testing.T) {
	_, err := Load(env(map[string]string{
		"DATABASE_URL":          "mysql://app:hunter2@db/ryw",
		"DATABASE_REPLICA_URLS": "postgres://app:hunter2@/ryw",
		"REDIS_URL":             "http://:hunter2@cache:6379",
	}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks a password or is nil: %v", err)
	}

	cfg, err := Load(env(map[string]string{
		"DATABASE_URL":          "postgres://app:hunter2@db/ryw?sslmode=disable",
		"DATABASE_REPLICA_URLS": "postgres://app:hunter2@r1/ryw?password=hunter2",
		"REDIS_URL":             "redis://:hunter2@cache:6379/0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "config", cfg)
	if strings.Contains(b.String(), "hunter2") {
		t.Errorf("logged config leaks a password: %s", b.String())
	}
	if !strings.Contains(b.String(), "app:xxxxx@db") {
		t.Errorf("logged config does not show the redacted primary: %s", b.String())
	}
}

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"":                              "",
		"postgres://u@h/db":             "postgres://u@h/db",
		"postgres://u:pw@h/db":          "postgres://u:xxxxx@h/db",
		"postgres://u@h/db?password=pw": "postgres://u@h/db?password=xxxxx",
		"redis://:pw@h:6379/0":          "redis://:xxxxx@h:6379/0",
		"postgres://u:p%zz@h/db":        "<unparseable URL>",
	}
	for in, want := range tests {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
