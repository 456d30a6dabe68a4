// Package compose_test checks, without Docker, that docker-compose.yml describes
// the ryw topology: a PostgreSQL primary with two streaming replicas, Redis, two
// API instances built from the Dockerfile, and nginx balancing between them.
//
// The file is loaded with compose-go, the library `docker compose` itself uses,
// so a file that passes is also one `docker compose` accepts. The scripts and
// configuration files it mounts are read from disk and checked against it.
package compose_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/ryw-go/ryw/config"
)

const (
	composeFile = "docker-compose.yml"

	primary  = "postgres-primary"
	replica1 = "postgres-replica1"
	replica2 = "postgres-replica2"

	pgDataDir = "/var/lib/postgresql/data"
)

// loadProject loads docker-compose.yml as `docker compose` would, but with an
// empty environment, so that the defaults in the file are what is checked and
// the developer's shell cannot change the outcome.
func loadProject(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithName("ryw"),
		cli.WithWorkingDirectory("."),
		cli.WithEnv(nil),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return project
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return s
}

// env returns the value of an environment variable of a service, "" if unset.
func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// mountedFile returns the host path of the file bind-mounted at target in the
// container, and its content. It fails the test when there is no such mount
// or the file is not on disk.
func mountedFile(t *testing.T, s types.ServiceConfig, target string) (string, string) {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target != target {
			continue
		}
		if v.Type != types.VolumeTypeBind {
			t.Fatalf("%s: %s is a %s mount, want a bind mount of a file in the repository", s.Name, target, v.Type)
		}
		b, err := os.ReadFile(v.Source)
		if err != nil {
			t.Fatalf("%s: file mounted at %s: %v", s.Name, target, err)
		}
		return v.Source, string(b)
	}
	t.Fatalf("%s: nothing is mounted at %s", s.Name, target)
	return "", ""
}

// dataVolume returns the named volume holding the PostgreSQL data directory.
func dataVolume(t *testing.T, s types.ServiceConfig) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == pgDataDir {
			if v.Type != types.VolumeTypeVolume {
				t.Errorf("%s: %s is a %s mount, want a named volume", s.Name, pgDataDir, v.Type)
			}
			return v.Source
		}
	}
	t.Fatalf("%s: no volume mounted at %s", s.Name, pgDataDir)
	return ""
}

func checkDependsOn(t *testing.T, s types.ServiceConfig, dep, condition string) {
	t.Helper()
	d, ok := s.DependsOn[dep]
	if !ok {
		t.Errorf("%s: does not depend on %s", s.Name, dep)
		return
	}
	if d.Condition != condition {
		t.Errorf("%s: depends on %s with condition %q, want %q", s.Name, dep, d.Condition, condition)
	}
}

func checkHealthcheck(t *testing.T, s types.ServiceConfig, want string) {
	t.Helper()
	if s.HealthCheck == nil || s.HealthCheck.Disable {
		t.Errorf("%s: no healthcheck, want one running %s", s.Name, want)
		return
	}
	if got := strings.Join(s.HealthCheck.Test, " "); !strings.Contains(got, want) {
		t.Errorf("%s: healthcheck runs %q, want %s", s.Name, got, want)
	}
}

// checkImage checks that a service runs the named image with a pinned tag.
func checkImage(t *testing.T, s types.ServiceConfig, name string) {
	t.Helper()
	repo, tag, _ := strings.Cut(s.Image, ":")
	if repo != name && repo != "docker.io/library/"+name {
		t.Errorf("%s: image %q, want the official %s image", s.Name, s.Image, name)
	}
	if tag == "" || tag == "latest" {
		t.Errorf("%s: image %q, want a pinned version tag", s.Name, s.Image)
	}
}

func TestComposeServices(t *testing.T) {
	p := loadProject(t)
	want := []string{"api1", "api2", "nginx", primary, replica1, replica2, "redis", "prometheus", "grafana"}
	slices.Sort(want)
	got := slices.Sorted(maps.Keys(p.Services))
	if !slices.Equal(got, want) {
		t.Errorf("%s: services %v, want exactly %v", composeFile, got, want)
	}
}

func TestComposePostgresImages(t *testing.T) {
	p := loadProject(t)
	primaryImage := service(t, p, primary).Image
	for _, name := range []string{primary, replica1, replica2} {
		s := service(t, p, name)
		checkImage(t, s, "postgres")
		checkHealthcheck(t, s, "pg_isready")
		// pg_basebackup copies the primary's files: the versions must match.
		if s.Image != primaryImage {
			t.Errorf("%s: image %q, want the primary's %q", name, s.Image, primaryImage)
		}
	}
}

func TestComposePrimary(t *testing.T) {
	p := loadProject(t)
	s := service(t, p, primary)

	cmd := strings.Join(s.Command, " ")
	for _, setting := range []string{"wal_level=replica", "max_wal_senders=", "max_replication_slots=", "listen_addresses="} {
		if !strings.Contains(cmd, setting) {
			t.Errorf("%s: command %q does not set %s", primary, cmd, setting)
		}
	}
	if env(s, "POSTGRES_DB") != "ryw" {
		t.Errorf("%s: POSTGRES_DB = %q, want ryw", primary, env(s, "POSTGRES_DB"))
	}

	var initScript string
	for _, v := range s.Volumes {
		if strings.HasPrefix(v.Target, "/docker-entrypoint-initdb.d/") {
			initScript = v.Target
		}
	}
	if initScript == "" {
		t.Fatalf("%s: no init script mounted into /docker-entrypoint-initdb.d", primary)
	}
	path, script := mountedFile(t, s, initScript)
	for _, c := range []struct {
		what string
		re   *regexp.Regexp
	}{
		{"create a REPLICATION role", regexp.MustCompile(`(?is)\bcreate\s+(role|user)\b[^;]*\breplication\b`)},
		{"create physical replication slots", regexp.MustCompile(`pg_create_physical_replication_slot`)},
		{"allow replication connections in pg_hba.conf", regexp.MustCompile(`host\s+replication\s+\S+\s+all\s+(scram-sha-256|md5)[^\n]*pg_hba\.conf`)},
	} {
		if !c.re.MatchString(script) {
			t.Errorf("%s: init script %s does not %s (no match for %s)", primary, path, c.what, c.re)
		}
	}
	dataVolume(t, s)
}

func TestComposeReplicas(t *testing.T) {
	p := loadProject(t)
	prim := service(t, p, primary)
	slots := strings.Fields(env(prim, "REPLICATION_SLOTS"))
	if len(slots) == 0 {
		t.Fatalf("%s: REPLICATION_SLOTS is empty: the init script would create no slot", primary)
	}

	volumeOwner := map[string]string{dataVolume(t, prim): primary}
	slotOwner := map[string]string{}

	for _, tc := range []struct {
		name, slot string
	}{
		{replica1, "replica1"},
		{replica2, "replica2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := service(t, p, tc.name)
			checkDependsOn(t, s, primary, types.ServiceConditionHealthy)

			if got := env(s, "PRIMARY_HOST"); got != primary {
				t.Errorf("%s: PRIMARY_HOST = %q, want %s", tc.name, got, primary)
			}
			slot := env(s, "REPLICA_SLOT")
			if slot != tc.slot {
				t.Errorf("%s: REPLICA_SLOT = %q, want %s", tc.name, slot, tc.slot)
			}
			if !slices.Contains(slots, slot) {
				t.Errorf("%s: slot %q is not among the slots the primary creates (REPLICATION_SLOTS %v)", tc.name, slot, slots)
			}
			if other, ok := slotOwner[slot]; ok {
				t.Errorf("%s and %s both stream through slot %q", other, tc.name, slot)
			}
			slotOwner[slot] = tc.name
			for _, key := range []string{"REPLICATION_USER", "REPLICATION_PASSWORD"} {
				if env(s, key) == "" || env(s, key) != env(prim, key) {
					t.Errorf("%s: %s = %q, want the primary's %q", tc.name, key, env(s, key), env(prim, key))
				}
			}

			vol := dataVolume(t, s)
			if other, ok := volumeOwner[vol]; ok {
				t.Errorf("%s and %s share the data volume %q", other, tc.name, vol)
			}
			volumeOwner[vol] = tc.name

			// The entrypoint is `bash <script>`, so the script's file mode
			// does not matter; the script must be mounted from the repository.
			i := slices.IndexFunc(s.Entrypoint, func(a string) bool { return strings.HasSuffix(a, ".sh") })
			if i < 0 {
				t.Fatalf("%s: entrypoint %q runs no .sh script", tc.name, s.Entrypoint)
			}
			if i == 0 || !slices.Contains([]string{"bash", "sh", "/bin/bash", "/bin/sh"}, s.Entrypoint[0]) {
				t.Errorf("%s: entrypoint %q, want the script run by a shell (independent of its file mode)", tc.name, s.Entrypoint)
			}
			path, script := mountedFile(t, s, s.Entrypoint[i])
			script = regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(script, "")
			basebackup := regexp.MustCompile(`pg_basebackup((\\\n|[^\n])*)`).FindStringSubmatch(script)
			if basebackup == nil {
				t.Fatalf("%s: entrypoint script %s never runs pg_basebackup", tc.name, path)
			}
			args := strings.Fields(strings.ReplaceAll(basebackup[1], "\\\n", " "))
			for _, want := range [][]string{
				{"-R", "--write-recovery-conf"},
				{"-S", "--slot"},
				{"-h", "--host"},
			} {
				if !slices.ContainsFunc(args, func(a string) bool {
					return a == want[0] || strings.HasPrefix(a, want[1])
				}) {
					t.Errorf("%s: pg_basebackup in %s is not given %s (args %q)", tc.name, path, want[0], args)
				}
			}
			if i := slices.Index(args, "-h"); i >= 0 && i+1 < len(args) &&
				!strings.Contains(args[i+1], "PRIMARY_HOST") && !strings.Contains(args[i+1], primary) {
				t.Errorf("%s: pg_basebackup connects to %s, want %s (or $PRIMARY_HOST)", tc.name, args[i+1], primary)
			}
			if i := slices.Index(args, "-S"); i >= 0 && i+1 < len(args) && !strings.Contains(args[i+1], "REPLICA_SLOT") {
				t.Errorf("%s: pg_basebackup uses slot %s, want $REPLICA_SLOT", tc.name, args[i+1])
			}
		})
	}
}

func TestComposeRedis(t *testing.T) {
	p := loadProject(t)
	s := service(t, p, "redis")
	checkImage(t, s, "redis")
	checkHealthcheck(t, s, "redis-cli ping")
}

// TestComposeMetrics: Prometheus scrapes both API instances' /metrics, and
// Grafana mounts the dashboard and a Prometheus data source.
func TestComposeMetrics(t *testing.T) {
	p := loadProject(t)
	prom := service(t, p, "prometheus")
	checkImage(t, prom, "prom/prometheus")
	config, err := os.ReadFile("docker/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{`"api1:8080"`, `"api2:8080"`, "metrics_path: /metrics"} {
		if !strings.Contains(string(config), target) {
			t.Errorf("prometheus.yml does not scrape %s", target)
		}
	}
	graf := service(t, p, "grafana")
	checkImage(t, graf, "grafana/grafana")
	var mounts []string
	for _, v := range graf.Volumes {
		mounts = append(mounts, v.Target)
	}
	if !slices.Contains(mounts, "/var/lib/grafana/dashboards") || !slices.Contains(mounts, "/etc/grafana/provisioning") {
		t.Errorf("grafana mounts %v; want the dashboards and the provisioning", mounts)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	b, err := os.ReadFile("docs/grafana/ryw-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("docs/grafana/ryw-dashboard.json: %v, %d panels", err, len(dash.Panels))
	}
	// Every metric the dashboard plots is one the API exports.
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "ryw_") {
				t.Errorf("panel query %q plots no ryw_ metric", tg.Expr)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`(?im)^\s*FROM\s`).FindAllString(string(b), -1)
	if len(from) < 2 {
		t.Errorf("Dockerfile has %d FROM lines, want a multi-stage build (at least 2)", len(from))
	}
	if !regexp.MustCompile(`go build[^\n]*\./cmd/api`).Match(b) {
		t.Errorf("Dockerfile does not build ./cmd/api")
	}
}

func TestComposeAPI(t *testing.T) {
	p := loadProject(t)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	api1 := service(t, p, "api1")

	for _, name := range []string{"api1", "api2"} {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)

			if s.Build == nil {
				t.Fatalf("%s: no build section, want build: . (the Dockerfile in the repository root)", name)
			}
			if s.Build.Context != root {
				t.Errorf("%s: build context %q, want the repository root %q", name, s.Build.Context, root)
			}
			dockerfile := s.Build.Dockerfile
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			if dockerfile != filepath.Join(root, "Dockerfile") {
				t.Errorf("%s: builds %s, want %s", name, dockerfile, filepath.Join(root, "Dockerfile"))
			}
			if _, err := os.Stat(dockerfile); err != nil {
				t.Errorf("%s: %v", name, err)
			}

			if _, port, err := net.SplitHostPort(env(s, "HTTP_ADDR")); err != nil || port != "8080" {
				t.Errorf("%s: HTTP_ADDR = %q, want :8080 (the port nginx forwards to)", name, env(s, "HTTP_ADDR"))
			}
			checkURLHost(t, name, "DATABASE_URL", env(s, "DATABASE_URL"), []string{"postgres", "postgresql"}, primary)
			checkURLHost(t, name, "REDIS_URL", env(s, "REDIS_URL"), []string{"redis"}, "redis")

			replicas, err := parseReplicaURLs(env(s, "DATABASE_REPLICA_URLS"))
			if err != nil {
				t.Errorf("%s: DATABASE_REPLICA_URLS: %v", name, err)
			}
			wantReplicas := map[string]string{"replica1": replica1, "replica2": replica2}
			if !maps.Equal(replicas, wantReplicas) {
				t.Errorf("%s: DATABASE_REPLICA_URLS names and hosts %v, want %v", name, replicas, wantReplicas)
			}

			checkDependsOn(t, s, primary, types.ServiceConditionHealthy)
			checkDependsOn(t, s, "redis", types.ServiceConditionHealthy)
			for _, r := range []string{replica1, replica2} {
				if _, ok := s.DependsOn[r]; !ok {
					t.Errorf("%s: does not depend on %s", name, r)
				}
			}

			// Both instances must be configured alike, or the demo compares
			// two different services.
			if !maps.EqualFunc(s.Environment, api1.Environment, func(a, b *string) bool {
				return (a == nil) == (b == nil) && (a == nil || *a == *b)
			}) {
				t.Errorf("%s: environment differs from api1's", name)
			}
		})
	}
}

// checkURLHost checks that an environment variable holds a URL with one of the
// given schemes and the given host.
func checkURLHost(t *testing.T, svc, key, raw string, schemes []string, host string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("%s: %s: %v", svc, key, err)
		return
	}
	if !slices.Contains(schemes, u.Scheme) || u.Hostname() != host {
		t.Errorf("%s: %s = %q, want a %s:// URL to host %s", svc, key, raw, schemes[0], host)
	}
}

// parseReplicaURLs reads DATABASE_REPLICA_URLS as the API does: comma-separated
// items, each a URL or name=url, unnamed items being replica1, replica2, ... in
// order. It returns the host of each replica by name.
func parseReplicaURLs(s string) (map[string]string, error) {
	hosts := map[string]string{}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		name, raw := fmt.Sprintf("replica%d", i+1), item
		// "=" also appears in the query string (sslmode=disable): it names the
		// replica only when it comes before the scheme.
		if j := strings.Index(item, "="); j >= 0 && !strings.Contains(item[:j], "://") {
			name, raw = item[:j], item[j+1:]
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i+1, err)
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return nil, fmt.Errorf("item %d (%s): scheme %q, want postgres", i+1, name, u.Scheme)
		}
		if _, dup := hosts[name]; dup {
			return nil, fmt.Errorf("replica name %q used twice", name)
		}
		hosts[name] = u.Hostname()
	}
	return hosts, nil
}

func TestComposeNginx(t *testing.T) {
	p := loadProject(t)
	s := service(t, p, "nginx")
	checkImage(t, s, "nginx")

	if !slices.ContainsFunc(s.Ports, func(port types.ServicePortConfig) bool {
		return port.Published == "8080" && port.Target == 80
	}) {
		t.Errorf("nginx: ports %+v, want host port 8080 published to container port 80", s.Ports)
	}
	for _, api := range []string{"api1", "api2"} {
		if _, ok := s.DependsOn[api]; !ok {
			t.Errorf("nginx: does not depend on %s", api)
		}
	}

	path, conf := mountedFile(t, s, "/etc/nginx/nginx.conf")
	conf = regexp.MustCompile(`#[^\n]*`).ReplaceAllString(conf, "")
	if !regexp.MustCompile(`\blisten\s+80\s*;`).MatchString(conf) {
		t.Errorf("nginx: %s does not listen on port 80", path)
	}
	// The API itself: the catch-all location. (The live page's location
	// polls one instance; see TestComposeNginxLivePage.)
	pass := regexp.MustCompile(`(?s)\blocation\s+/\s*\{[^}]*?\bproxy_pass\s+http://([\w.-]+)\s*;`).FindStringSubmatch(conf)
	if pass == nil {
		t.Fatalf("nginx: %s has no location / with a proxy_pass to an upstream", path)
	}
	var servers []string
	for _, m := range regexp.MustCompile(`(?s)\bupstream\s+([\w.-]+)\s*\{(.*?)\}`).FindAllStringSubmatch(conf, -1) {
		if m[1] != pass[1] {
			continue
		}
		for _, sm := range regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)`).FindAllStringSubmatch(m[2], -1) {
			servers = append(servers, sm[1])
		}
	}
	slices.Sort(servers)
	if want := []string{"api1:8080", "api2:8080"}; !slices.Equal(servers, want) {
		t.Errorf("nginx: upstream %q in %s has servers %v, want %v", pass[1], path, servers, want)
	}
}

// TestComposeJWTOverride: docker-compose.jwt.yml turns both APIs to
// AUTH_MODE=jwt against the development issuer it adds, with an iss and an
// aud that match what the issuer mints, and a configuration the API
// accepts.
func TestComposeJWTOverride(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{composeFile, "docker-compose.jwt.yml"},
		cli.WithName("ryw"), cli.WithWorkingDirectory("."), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load with docker-compose.jwt.yml: %v", err)
	}
	issuer := service(t, p, "issuer")
	if issuer.Build == nil || issuer.Build.Target != "issuer" {
		t.Fatalf("issuer: build %+v, want the Dockerfile's issuer stage", issuer.Build)
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?im)^FROM\s+\S+\s+AS\s+issuer\s*$`).Match(df) || !regexp.MustCompile(`go build[^\n]*\./cmd/devstack`).Match(df) {
		t.Error("Dockerfile has no issuer stage built from ./cmd/devstack")
	}
	flag := func(name string) string {
		i := slices.Index(issuer.Command, name)
		if i < 0 || i+1 >= len(issuer.Command) {
			t.Fatalf("issuer command %q lacks %s", issuer.Command, name)
		}
		return issuer.Command[i+1]
	}
	_, port, _ := net.SplitHostPort(flag("-addr"))
	for _, name := range []string{"api1", "api2"} {
		s := service(t, p, name)
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		if env["AUTH_MODE"] != "jwt" || env["AUTH_ISSUER"] != flag("-issuer") || env["AUTH_AUDIENCE"] != flag("-audience") {
			t.Errorf("%s: AUTH_MODE %q, AUTH_ISSUER %q, AUTH_AUDIENCE %q; want jwt and the issuer's -issuer and -audience", name, env["AUTH_MODE"], env["AUTH_ISSUER"], env["AUTH_AUDIENCE"])
		}
		u, err := url.Parse(env["AUTH_JWKS_URL"])
		if err != nil || u.Hostname() != "issuer" || u.Port() != port || u.Path != "/.well-known/jwks.json" {
			t.Errorf("%s: AUTH_JWKS_URL %q; want the issuer service's JWKS on port %s", name, env["AUTH_JWKS_URL"], port)
		}
		if _, ok := s.DependsOn["issuer"]; !ok {
			t.Errorf("%s does not depend on the issuer", name)
		}
		if _, err := config.Load(func(k string) string { return env[k] }); err != nil {
			t.Errorf("%s: the API refuses this configuration: %v", name, err)
		}
		if env["DATABASE_URL"] == "" || env["RYW_MODE"] == "" {
			t.Errorf("%s: the override lost the base environment: %v", name, env)
		}
	}
}

// TestComposeNginxLivePage: nginx sends the live page and its state to one
// instance (its counters are one process's) and still hides /metrics.
func TestComposeNginxLivePage(t *testing.T) {
	s := service(t, loadProject(t), "nginx")
	_, conf := mountedFile(t, s, "/etc/nginx/nginx.conf")
	conf = regexp.MustCompile(`#[^\n]*`).ReplaceAllString(conf, "")
	m := regexp.MustCompile(`(?s)\blocation\s+~\s+(\S+)\s*\{[^}]*?\bproxy_pass\s+http://([\w.-]+)\s*;`).FindStringSubmatch(conf)
	if m == nil {
		t.Fatal("nginx: no location for the live page")
	}
	re := regexp.MustCompile(m[1])
	for path, want := range map[string]bool{"/": true, "/ui/state": true, "/ui/static/app.js": true, "/api/me": false, "/metrics": false, "/swagger/index.html": false} {
		if re.MatchString(path) != want {
			t.Errorf("nginx: the live page's location %s matches %s: %v, want %v", m[1], path, !want, want)
		}
	}
	up := regexp.MustCompile(`(?s)\bupstream\s+` + regexp.QuoteMeta(m[2]) + `\s*\{(.*?)\}`).FindStringSubmatch(conf)
	if up == nil || len(regexp.MustCompile(`(?m)^\s*server\s+`).FindAllString(up[1], -1)) != 1 {
		t.Errorf("nginx: the live page's upstream %s should have one server", m[2])
	}
	if !regexp.MustCompile(`location\s*=\s*/metrics\s*\{\s*return\s+404;`).MatchString(conf) {
		t.Error("nginx: /metrics is no longer hidden")
	}
}
