package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PgPool is a pgpool-II (Debian's pgpool2) in front of the whole cluster,
// in streaming-replication mode with load balancing: the application sees
// one database, and pgpool sends each write to the primary and spreads
// reads over every node, by its own rules (disable_load_balance_on_write).
// It is the peer rywbench's peers suite measures ryw against; devstack
// starts it on demand (Stack.StartPgPool), next to the nodes, and stops it
// with the stack.
type PgPool struct {
	Port    int
	Options PgPoolOptions

	stack   *Stack
	bin     string
	dir     string
	logPath string
	conf    string // pgpool.conf's text

	server
}

// PgPoolOptions are the settings a PgPool is started with.
type PgPoolOptions struct {
	// LoadBalanceOnWrite is disable_load_balance_on_write: transaction
	// (pgpool's default), trans_transaction, always or dml_adaptive.
	LoadBalanceOnWrite string
	// Children is num_init_children: the client connections pgpool serves
	// at once (default 32), each by a process of its own.
	Children int
	// MaxPool is max_pool: the backend connection sets each child keeps
	// for distinct user/database pairs (default 1: the application has one).
	MaxPool int
}

// The values of PgPoolOptions.LoadBalanceOnWrite.
var LoadBalanceOnWriteModes = []string{"transaction", "trans_transaction", "always", "dml_adaptive"}

// PgPoolBinary is where Debian's pgpool2 installs pgpool.
const PgPoolBinary = "/usr/sbin/pgpool"

// findPgPool looks for pgpool where Debian installs it, then on PATH.
func findPgPool() (string, error) {
	return findProgram("pgpool", []string{PgPoolBinary}, "devstack: pgpool not found: install pgpool-II (apt-get install pgpool2)")
}

// HavePgPool reports whether pgpool is installed.
func HavePgPool() bool {
	_, err := findPgPool()
	return err == nil
}

// PgPoolVersion is `pgpool --version`'s line ("pgpool-II version 4.3.5
// (tamahomeboshi)").
func PgPoolVersion(ctx context.Context) (string, error) {
	bin, err := findPgPool()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pgpool --version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// StartPgPool starts a pgpool in front of the primary and every replica
// (backend 0 is the primary, then the replicas in order, all of weight 1),
// and waits until it serves a query and sees every node up.
func (s *Stack) StartPgPool(ctx context.Context, opts PgPoolOptions) (*PgPool, error) {
	bin, err := findPgPool()
	if err != nil {
		return nil, err
	}
	if opts.LoadBalanceOnWrite == "" {
		opts.LoadBalanceOnWrite = "transaction"
	}
	if !slices.Contains(LoadBalanceOnWriteModes, opts.LoadBalanceOnWrite) {
		return nil, fmt.Errorf("devstack: disable_load_balance_on_write must be one of %s, got %q", strings.Join(LoadBalanceOnWriteModes, ", "), opts.LoadBalanceOnWrite)
	}
	if opts.Children <= 0 {
		opts.Children = 32
	}
	if opts.MaxPool <= 0 {
		opts.MaxPool = 1
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(s.Dir, "pgpool-")
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	as := s.Primary.as
	if err := as.chown(dir); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	p := &PgPool{Port: port, Options: opts, stack: s, bin: bin, dir: dir, logPath: dir + ".log"}
	p.conf = p.config()
	// pcp.conf (pgpool's admin interface, unused here) and pool_hba.conf
	// (off) must exist; pool_passwd is off: authentication is the nodes'
	// own (trust on loopback).
	for name, text := range map[string]string{"pgpool.conf": p.conf, "pcp.conf": "", "pool_hba.conf": ""} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("devstack: %w", err)
		}
		if err := as.chown(path); err != nil {
			return nil, fmt.Errorf("devstack: %w", err)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("devstack: the stack is closed")
	}
	s.closers = append(s.closers, p.Stop)
	s.mu.Unlock()
	s.logf("pgpool (disable_load_balance_on_write = %s) on port %d", opts.LoadBalanceOnWrite, port)
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Settings are pgpool.conf's settings that decide what pgpool does with
// the application's statements, in the file's order, as name and value:
// what a report of a measurement through it must state.
func (p *PgPool) Settings() [][2]string {
	s := p.stack
	nodes := append([]*Node{s.Primary}, s.Replicas...)
	var out [][2]string
	add := func(name, value string) { out = append(out, [2]string{name, value}) }
	add("backend_clustering_mode", "'streaming_replication'")
	for i, n := range nodes {
		id := strconv.Itoa(i)
		add("backend_hostname"+id, "'127.0.0.1'")
		add("backend_port"+id, strconv.Itoa(n.Port))
		add("backend_weight"+id, "1")
		add("backend_flag"+id, "'DISALLOW_TO_FAILOVER'")
		add("backend_application_name"+id, "'"+n.Name+"'")
	}
	add("num_init_children", strconv.Itoa(p.Options.Children))
	add("max_pool", strconv.Itoa(p.Options.MaxPool))
	add("connection_cache", "on")
	add("load_balance_mode", "on")
	add("disable_load_balance_on_write", "'"+p.Options.LoadBalanceOnWrite+"'")
	add("statement_level_load_balance", "off")
	add("read_only_function_list", "''")
	add("write_function_list", "''")
	add("sr_check_period", "10")
	add("sr_check_user", "'postgres'")
	add("sr_check_password", "''")
	add("sr_check_database", "'postgres'")
	add("delay_threshold", "0")
	add("health_check_period", "10")
	add("health_check_user", "'postgres'")
	add("health_check_password", "''")
	add("health_check_database", "'postgres'")
	add("failover_on_backend_error", "off")
	add("memory_cache_enabled", "off")
	add("enable_pool_hba", "off")
	add("pool_passwd", "''")
	return out
}

// config is pgpool.conf: Settings, then where pgpool listens and keeps
// its files (all in its directory).
func (p *PgPool) config() string {
	var b strings.Builder
	b.WriteString("# devstack: pgpool-II in front of the stack's primary and replicas\n")
	for _, kv := range p.Settings() {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	fmt.Fprintf(&b, `listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%[2]s'
pcp_listen_addresses = ''
pcp_port = 9898
pcp_socket_dir = '%[2]s'
wd_ipc_socket_dir = '%[2]s'
pid_file_name = '%[2]s/pgpool.pid'
logdir = '%[2]s'
use_watchdog = off
log_destination = 'stderr'
logging_collector = off
log_min_messages = warning
log_connections = off
`, p.Port, p.dir)
	return b.String()
}

// Conf is the text of pgpool.conf.
func (p *PgPool) Conf() string { return p.conf }

// Start starts pgpool (in the foreground, -n, discarding any node status
// a previous run left, -D) and waits until a query through it works and
// SHOW POOL_NODES shows every node up.
func (p *PgPool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc.alive() {
		return errors.New("pgpool is already running")
	}
	proc, err := startProc(procSpec{
		name: "pgpool",
		argv: []string{p.bin, "-n", "-D", "-f", filepath.Join(p.dir, "pgpool.conf"),
			"-F", filepath.Join(p.dir, "pcp.conf"), "-a", filepath.Join(p.dir, "pool_hba.conf")},
		dir: p.dir, env: childEnv(p.dir), as: p.stack.Primary.as, logPath: p.logPath, deathSignal: syscall.SIGINT,
	})
	if err != nil {
		return err
	}
	p.proc = proc
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	want := 1 + len(p.stack.Replicas)
	err = poll(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		if proc.exited() {
			return true, fmt.Errorf("pgpool exited during start-up: %v\n%s", proc.err, proc.logTail(15))
		}
		nodes, err := p.nodes(ctx)
		if err != nil {
			return false, err
		}
		up := 0
		for _, n := range nodes {
			if n.Status == "up" || n.Status == "waiting" {
				up++
			}
		}
		if up != want {
			return false, fmt.Errorf("SHOW POOL_NODES: %d of %d nodes up: %v", up, want, nodes)
		}
		return true, nil
	})
	if err != nil {
		_ = proc.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start pgpool: %w", err)
	}
	return nil
}

// Stop shuts pgpool down (fast shutdown: its clients are disconnected).
func (p *PgPool) Stop(ctx context.Context) error {
	return p.halt(ctx, syscall.SIGINT, 10*time.Second)
}

// URL is the application database through pgpool, as the superuser.
func (p *PgPool) URL() string {
	return withHost(p.stack.Primary.URL, "127.0.0.1:"+strconv.Itoa(p.Port))
}

// PoolNode is one row of pgpool's SHOW POOL_NODES.
type PoolNode struct {
	ID       int
	Port     int
	Status   string // up, down, waiting, unused
	Role     string // primary or standby, as pgpool sees it
	Selects  int64  // select_cnt: the SELECTs pgpool sent to the node
	Balanced bool   // load_balance_node: this session's reads go there
}

// Nodes runs SHOW POOL_NODES through pgpool.
func (p *PgPool) Nodes(ctx context.Context) ([]PoolNode, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.nodes(ctx)
}

func (p *PgPool) nodes(ctx context.Context) ([]PoolNode, error) {
	cfg, err := pgx.ParseConfig(p.URL())
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	res, err := c.PgConn().Exec(ctx, "SHOW POOL_NODES").ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("SHOW POOL_NODES returned %d results", len(res))
	}
	return parsePoolNodes(res[0].FieldDescriptions, res[0].Rows)
}

// parsePoolNodes reads SHOW POOL_NODES by column name: its columns change
// between pgpool versions.
func parsePoolNodes(fields []pgconn.FieldDescription, rows [][][]byte) ([]PoolNode, error) {
	col := map[string]int{}
	for i, f := range fields {
		col[f.Name] = i
	}
	for _, name := range []string{"node_id", "port", "status", "role", "select_cnt", "load_balance_node"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("SHOW POOL_NODES has no %s column", name)
		}
	}
	var out []PoolNode
	for _, r := range rows {
		var n PoolNode
		var err error
		if n.ID, err = strconv.Atoi(string(r[col["node_id"]])); err != nil {
			return nil, fmt.Errorf("SHOW POOL_NODES node_id %q", r[col["node_id"]])
		}
		n.Port, _ = strconv.Atoi(string(r[col["port"]]))
		n.Status = string(r[col["status"]])
		n.Role = string(r[col["role"]])
		if n.Selects, err = strconv.ParseInt(string(r[col["select_cnt"]]), 10, 64); err != nil {
			return nil, fmt.Errorf("SHOW POOL_NODES select_cnt %q", r[col["select_cnt"]])
		}
		n.Balanced = string(r[col["load_balance_node"]]) == "true"
		out = append(out, n)
	}
	return out, nil
}
