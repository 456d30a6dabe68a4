package devstack

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncer is a pgbouncer (Debian's package) in front of one node, as
// deployments run it: every client connection goes through it, and it hands
// each transaction (PoolTransaction) or each client connection
// (PoolSession) a server connection of its pool.
type PgBouncer struct {
	Node *Node  // the node it pools
	Mode string // PoolTransaction or PoolSession
	Port int

	bin     string
	dir     string
	as      *account
	logPath string

	server
}

// PoolSize is the server connections each pgbouncer keeps per database and
// user (default_pool_size) in transaction mode: fewer than the clients'
// pools open, so that clients share them, as they do in production.
const PoolSize = 20

// SessionPoolSize is default_pool_size in session mode, where a client
// connection holds its server connection until it closes: enough for the
// pools of several API instances (ryw opens up to MaxConns, 20 by default,
// plus one for its monitor, per node and instance), as a deployment must
// size it. Fewer makes instances wait for one another's idle connections.
const SessionPoolSize = 120

// SessionMinPoolSize is min_pool_size in session mode: the server
// connections pgbouncer opens before clients ask for them. PgBouncer opens
// one server connection at a time per pool, so a cold pool meeting many
// clients at once makes them queue (seconds, on a busy machine), and a
// client that gives up leaves its place in the queue behind. Warm pools
// are how session pooling is run; this covers two API instances' pools
// (2 x (20 + 1)) and a little more.
const SessionMinPoolSize = 48

// findPgBouncer looks for pgbouncer where Debian installs it, then on PATH.
func findPgBouncer() (string, error) {
	return findProgram("pgbouncer", []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"},
		"devstack: pgbouncer not found: install it (apt-get install pgbouncer) or start the stack without a pooler")
}

// startPoolers puts a pgbouncer in front of every node.
func (s *Stack) startPoolers(ctx context.Context, mode string) error {
	bin, err := findPgBouncer()
	if err != nil {
		return err
	}
	for _, n := range append([]*Node{s.Primary}, s.Replicas...) {
		port, err := freePort()
		if err != nil {
			return err
		}
		dir := filepath.Join(s.Dir, "pgbouncer-"+n.Name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		if err := n.as.chown(dir); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		b := &PgBouncer{Node: n, Mode: mode, Port: port, bin: bin, dir: dir, as: n.as, logPath: filepath.Join(s.Dir, "pgbouncer-"+n.Name+".log")}
		if err := b.writeConfig(); err != nil {
			return err
		}
		n.pooler = b
		s.logf("pgbouncer (%s pooling) for %s on port %d", mode, n.Name, port)
		if err := b.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// writeConfig writes pgbouncer.ini and the user list. Every database of
// the node is served under its own name; any user the node knows may
// connect (trust, as the nodes themselves allow on loopback).
func (b *PgBouncer) writeConfig() error {
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 2000
min_pool_size = %d
server_reset_query = DISCARD ALL
server_check_delay = 0
server_connect_timeout = 5
server_login_retry = 1
admin_users = postgres
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
`, b.Node.Port, b.Port, filepath.Join(b.dir, "userlist.txt"), b.Mode, b.PoolSize(), b.minPoolSize())
	users := fmt.Sprintf("%q \"\"\n%q \"\"\n", "postgres", AppRole)
	for name, text := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": users} {
		path := filepath.Join(b.dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		if err := b.as.chown(path); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
	}
	return nil
}

// PoolSize is the pool's default_pool_size.
func (b *PgBouncer) PoolSize() int {
	if b.Mode == PoolSession {
		return SessionPoolSize
	}
	return PoolSize
}

// minPoolSize is the pool's min_pool_size: SessionMinPoolSize in session
// mode, 0 (none kept open) in transaction mode, whose pools fill at once.
func (b *PgBouncer) minPoolSize() int {
	if b.Mode == PoolSession {
		return SessionMinPoolSize
	}
	return 0
}

// Start starts pgbouncer and waits until it serves a query from its node
// (when the node runs).
func (b *PgBouncer) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc.alive() {
		return fmt.Errorf("pgbouncer for %s is already running", b.Node.Name)
	}
	p, err := startProc(procSpec{
		name: "pgbouncer-" + b.Node.Name,
		argv: []string{b.bin, filepath.Join(b.dir, "pgbouncer.ini")},
		dir:  b.dir, env: childEnv(b.dir), as: b.as, logPath: b.logPath, deathSignal: syscall.SIGTERM,
	})
	if err != nil {
		return err
	}
	b.proc = p
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	err = poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return true, fmt.Errorf("pgbouncer exited during start-up: %v\n%s", p.err, p.logTail(15))
		}
		if !b.Node.Running() {
			return true, nil // it listens; the node is down on purpose
		}
		return b.ping(ctx) == nil, nil
	})
	if err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start pgbouncer for %s: %w", b.Node.Name, err)
	}
	return nil
}

// Stop shuts pgbouncer down.
func (b *PgBouncer) Stop(ctx context.Context) error {
	return b.halt(ctx, syscall.SIGINT, 10*time.Second)
}

// URL is the pooler's address for the node's database, as the superuser.
func (b *PgBouncer) URL() string {
	return withHost(b.Node.URL, "127.0.0.1:"+strconv.Itoa(b.Port))
}

func (b *PgBouncer) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(b.URL())
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT 1")
	return err
}

// warmPoolers opens SessionMinPoolSize server connections behind every
// session-mode pgbouncer, for the application's user, before anything
// uses the stack: a session pool that starts cold under load makes
// clients queue behind pgbouncer's one login at a time, and the clients
// that give up cost a server connection each (docs/OPERATIONS.md). Then
// min_pool_size keeps them open.
func (s *Stack) warmPoolers(ctx context.Context) error {
	for _, n := range append([]*Node{s.Primary}, s.Replicas...) {
		if n.pooler == nil || n.pooler.Mode != PoolSession || !n.Running() {
			continue
		}
		if err := warm(ctx, s.ClientURL(n), SessionMinPoolSize); err != nil {
			return fmt.Errorf("devstack: warm the pgbouncer of %s: %w", n.Name, err)
		}
	}
	return nil
}

// warm holds n connections to url open at once, each with a query run on
// it (so that a session pooler gives each a server connection of its
// own), then closes them.
func warm(ctx context.Context, url string, n int) error {
	ctx, cancel := withDefaultTimeout(ctx, time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		conns []*pgx.Conn
	)
	for range n {
		wg.Go(func() {
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				_, err = c.Exec(ctx, "SELECT 1")
			}
			mu.Lock()
			defer mu.Unlock()
			if c != nil {
				conns = append(conns, c)
			}
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		_ = c.Close(context.Background())
	}
	return first
}

// Admin runs a command of pgbouncer's admin console (SHOW POOLS, RECONNECT,
// ...) and returns its rows as text.
func (b *PgBouncer) Admin(ctx context.Context, command string) ([][]string, error) {
	cfg, err := pgx.ParseConfig(withHost(fmt.Sprintf("postgres://postgres@x/pgbouncer?sslmode=disable"), "127.0.0.1:"+strconv.Itoa(b.Port)))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	res, err := c.PgConn().Exec(ctx, command).ReadAll()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for _, r := range res {
		for _, row := range r.Rows {
			line := make([]string, len(row))
			for i, v := range row {
				line[i] = string(v)
			}
			out = append(out, line)
		}
	}
	return out, nil
}

// withHost replaces the host (and port) of a postgres:// URL.
func withHost(raw, hostport string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Host = hostport
	return u.String()
}

// withUser replaces the user of a postgres:// URL.
func withUser(raw, user string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = url.User(user)
	return u.String()
}

// Pooler is the pgbouncer in front of the node, or nil.
func (n *Node) Pooler() *PgBouncer { return n.pooler }

// ClientURL is the URL the application uses for node n: through its pooler
// when the stack has one, as AppRole with Options.LeastPrivilege. Node.URL
// stays the superuser's direct address, for the tests' own faults.
func (s *Stack) ClientURL(n *Node) string {
	u := n.URL
	if n.pooler != nil {
		u = n.pooler.URL()
	}
	if s.appUser != "" {
		u = withUser(u, s.appUser)
	}
	return u
}

// clientHost is host:port the application reaches node n at.
func (n *Node) clientHost() string {
	if n.pooler != nil {
		return "127.0.0.1:" + strconv.Itoa(n.pooler.Port)
	}
	return "127.0.0.1:" + strconv.Itoa(n.Port)
}

// PoolerEnv is the API's setting for the stack's pooler: none, or the
// pool mode.
func (s *Stack) PoolerEnv() string {
	if s.Primary != nil && s.Primary.pooler != nil {
		return strings.ToLower(s.Primary.pooler.Mode)
	}
	return "none"
}
