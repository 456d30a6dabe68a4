package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ryw-go/ryw/ryw"
)

// commonConf goes into the primary's postgresql.conf before any replica is
// cloned from it, so every node shares it. It trades durability for speed
// (fsync off): this is a development and test stack, and a crash of the
// machine is not a scenario it has to survive.
const commonConf = `
# devstack
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
wal_level = replica
max_wal_senders = 16
max_replication_slots = 16
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
# A restarted replica reconnects to the primary quickly instead of after 5s.
wal_retrieve_retry_interval = 100ms
log_min_messages = warning
log_line_prefix = '%m [%p] '
`

// Node is one PostgreSQL server of the stack: the primary or a replica.
type Node struct {
	Name    string // "primary", "replica1", ...
	Port    int
	URL     string // postgres://postgres@127.0.0.1:<port>/<db>?sslmode=disable
	DataDir string
	// ApplyDelay is the replica's recovery_min_apply_delay (0: none).
	ApplyDelay time.Duration

	replica bool
	pooler  *PgBouncer // in front of the node, or nil
	bins    binaries
	as      *account
	home    string
	logPath string

	// server holds the postmaster's process: its Pid (0 when the node is
	// not running) is where benchmarks read the CPU time of it and its
	// children from /proc.
	server
}

// Program is the path of one of the PostgreSQL client or server programs
// of the node's version (pgbench, psql, ...).
func (n *Node) Program(name string) string { return filepath.Join(n.bins.pgBin, name) }

// IsReplica reports whether the node is a streaming replica.
func (n *Node) IsReplica() bool { return n.replica }

func (n *Node) argv() []string {
	argv := []string{filepath.Join(n.bins.pgBin, "postgres"), "-D", n.DataDir, "-c", "port=" + strconv.Itoa(n.Port)}
	if n.ApplyDelay > 0 {
		argv = append(argv, "-c", fmt.Sprintf("recovery_min_apply_delay=%dms", n.ApplyDelay.Milliseconds()))
	}
	return argv
}

// Start starts the server and waits until it accepts connections. A replica
// then reconnects to the primary and streams on its own.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc.alive() {
		return fmt.Errorf("%s is already running", n.Name)
	}
	// A crashed server leaves its pid file; postgres copes with a stale one
	// whose pid is gone, so nothing to clean here.
	p, err := startProc(procSpec{
		name: n.Name, argv: n.argv(), dir: n.home, env: childEnv(n.home), as: n.as,
		logPath: n.logPath, deathSignal: syscall.SIGQUIT,
	})
	if err != nil {
		return err
	}
	n.proc = p
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	err = poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return true, fmt.Errorf("%s exited during start-up: %v\n%s", n.Name, p.err, p.logTail(15))
		}
		if err := n.ping(ctx); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		_ = p.stop(syscall.SIGQUIT, 5*time.Second)
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	return nil
}

// Stop shuts the server down cleanly (a "fast" shutdown: open sessions are
// ended, a checkpoint is written) and waits until it has exited.
func (n *Node) Stop(ctx context.Context) error {
	return n.halt(ctx, syscall.SIGINT)
}

// Kill stops the server the way a crash would, like `pg_ctl stop -m
// immediate`: no checkpoint, crash recovery at the next start.
func (n *Node) Kill(ctx context.Context) error {
	return n.halt(ctx, syscall.SIGQUIT)
}

func (n *Node) halt(ctx context.Context, sig syscall.Signal) error {
	return n.server.halt(ctx, sig, 30*time.Second)
}

// Running reports whether the server process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc.alive()
}

// LogPath is the server's log file, useful when a test fails.
func (n *Node) LogPath() string { return n.logPath }

func (n *Node) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.url("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

func (n *Node) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", n.Port, db)
}

// Conn opens a new connection to the node's database. The caller closes it.
func (n *Node) Conn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, n.URL)
}

// Exec runs one statement on the node on a fresh connection.
func (n *Node) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// QueryRow runs a query that returns one row on a fresh connection and scans
// the row into dest.
func (n *Node) QueryRow(ctx context.Context, dest []any, sql string, args ...any) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

func (n *Node) lsn(ctx context.Context, fn string) (ryw.LSN, error) {
	var s *string
	if err := n.QueryRow(ctx, []any{&s}, "SELECT "+fn+"()::text"); err != nil {
		return 0, err
	}
	if s == nil {
		return 0, fmt.Errorf("%s: %s() is null", n.Name, fn)
	}
	return ryw.ParseLSN(*s)
}

// CurrentLSN is the primary's current WAL write position.
func (n *Node) CurrentLSN(ctx context.Context) (ryw.LSN, error) {
	return n.lsn(ctx, "pg_current_wal_lsn")
}

// ReplayLSN is how far a replica has replayed: what its queries can see.
func (n *Node) ReplayLSN(ctx context.Context) (ryw.LSN, error) {
	return n.lsn(ctx, "pg_last_wal_replay_lsn")
}

// ReceiveLSN is how far a replica has received (and flushed) WAL, which may
// be ahead of what it has replayed.
func (n *Node) ReceiveLSN(ctx context.Context) (ryw.LSN, error) {
	return n.lsn(ctx, "pg_last_wal_receive_lsn")
}

// PauseReplay stops the replica from applying WAL and waits until it has
// really paused. It keeps receiving WAL, so its data goes deterministically
// stale: the way tests make a replica lag without sleeping.
func (n *Node) PauseReplay(ctx context.Context) error {
	if !n.replica {
		return fmt.Errorf("%s is not a replica", n.Name)
	}
	if err := n.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	err := poll(ctx, 5*time.Millisecond, func(ctx context.Context) (bool, error) {
		var state string
		if err := n.QueryRow(ctx, []any{&state}, "SELECT pg_get_wal_replay_pause_state()"); err != nil {
			return false, err
		}
		if state == "not paused" {
			// The request was lost: the server restarted (a fault test
			// killed it), or someone resumed replay. Ask again.
			return false, n.Exec(ctx, "SELECT pg_wal_replay_pause()")
		}
		return state == "paused", nil
	})
	if err != nil {
		return fmt.Errorf("%s: wait for replay to pause: %w", n.Name, err)
	}
	return nil
}

// ResumeReplay lets a paused replica apply WAL again.
func (n *Node) ResumeReplay(ctx context.Context) error {
	if !n.replica {
		return fmt.Errorf("%s is not a replica", n.Name)
	}
	return n.Exec(ctx, "SELECT pg_wal_replay_resume()")
}

// ReplayPaused reports whether replay is paused (or pausing) on the replica.
func (n *Node) ReplayPaused(ctx context.Context) (bool, error) {
	var state string
	if err := n.QueryRow(ctx, []any{&state}, "SELECT pg_get_wal_replay_pause_state()"); err != nil {
		return false, err
	}
	return state != "not paused", nil
}

// WaitReplayed waits until the replica has replayed WAL up to target,
// polling its replay position.
func (n *Node) WaitReplayed(ctx context.Context, target ryw.LSN) error {
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	err := poll(ctx, 5*time.Millisecond, func(ctx context.Context) (bool, error) {
		got, err := n.ReplayLSN(ctx)
		if err != nil {
			return false, err
		}
		return got >= target, nil
	})
	if err != nil {
		return fmt.Errorf("%s: wait for replay to reach %s: %w", n.Name, target, err)
	}
	return nil
}

// initPrimary creates the primary's data directory and configuration.
func (n *Node) initPrimary(ctx context.Context) error {
	if err := run(ctx, n.as, n.home, n.logPath, childEnv(n.home),
		filepath.Join(n.bins.pgBin, "initdb"), "-D", n.DataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(n.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(commonConf); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cloneFrom creates a replica's data directory from a base backup of the
// primary, with its own replication slot and standby configuration (-R).
func (n *Node) cloneFrom(ctx context.Context, primary *Node) error {
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", primary.Port, n.Name)
	err := run(ctx, n.as, n.home, n.logPath, childEnv(n.home),
		filepath.Join(n.bins.pgBin, "pg_basebackup"), "-d", conninfo, "-D", n.DataDir,
		"-R", "-X", "stream", "-S", n.Name, "-C", "--checkpoint=fast", "--no-sync")
	if err != nil {
		return fmt.Errorf("pg_basebackup for %s: %w", n.Name, err)
	}
	return nil
}
