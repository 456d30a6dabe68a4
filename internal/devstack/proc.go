package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// account is the unprivileged OS user PostgreSQL runs as when devstack runs
// as root: postgres refuses to start as root.
type account struct {
	name     string
	uid, gid uint32
}

// unprivileged returns nil when the process is not root (children run as we
// do), else the "postgres" account, else "nobody".
func unprivileged() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and neither a 'postgres' nor a 'nobody' user exists for PostgreSQL to run as: create one (useradd --system postgres) or run devstack as a normal user")
}

// chown hands path to the account, so that it can write there.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	return os.Chown(path, int(a.uid), int(a.gid))
}

// binaries are the server programs devstack runs.
type binaries struct {
	pgBin string // directory holding initdb, postgres, pg_basebackup
	redis string // redis-server
}

var pgPrograms = []string{"initdb", "postgres", "pg_basebackup"}

// findBinaries looks for the PostgreSQL server programs under
// /usr/lib/postgresql/*/bin (newest version first), then on PATH, and for
// redis-server on PATH. A missing program is reported with what to install.
func findBinaries() (binaries, error) {
	var b binaries
	var errs []string
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if hasAll(dir, pgPrograms) {
			b.pgBin = dir
		} else {
			errs = append(errs, fmt.Sprintf("PG_BINDIR=%s does not hold %s", dir, strings.Join(pgPrograms, ", ")))
		}
	}
	if b.pgBin == "" && len(errs) == 0 {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
		for _, dir := range dirs {
			if hasAll(dir, pgPrograms) {
				b.pgBin = dir
				break
			}
		}
	}
	if b.pgBin == "" && len(errs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			if dir := filepath.Dir(p); hasAll(dir, pgPrograms) {
				b.pgBin = dir
			}
		}
	}
	if b.pgBin == "" && len(errs) == 0 {
		errs = append(errs, "the PostgreSQL server programs (initdb, postgres, pg_basebackup) are not in /usr/lib/postgresql/*/bin nor on PATH; "+
			"install them: Debian/Ubuntu `sudo apt-get install postgresql`, Fedora `sudo dnf install postgresql-server`, macOS `brew install postgresql@16`")
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		b.redis = p
	} else {
		errs = append(errs, "redis-server is not on PATH; install it: Debian/Ubuntu `sudo apt-get install redis-server`, Fedora `sudo dnf install redis`, macOS `brew install redis`")
	}
	if len(errs) > 0 {
		return b, errors.New("devstack: " + strings.Join(errs, "; "))
	}
	return b, nil
}

func hasAll(dir string, programs []string) bool {
	for _, p := range programs {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// pgVersion reads the major version out of /usr/lib/postgresql/<v>/bin.
func pgVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is one child process devstack started and owns.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // exit status; read only after done is closed
	logPath string
}

// procSpec says how to start a child process.
type procSpec struct {
	name    string
	argv    []string
	dir     string
	env     []string
	as      *account  // nil: run as ourselves
	log     io.Writer // where stdout and stderr go; nil: logPath
	logPath string
	// deathSignal is sent to the child by the kernel if devstack dies
	// without stopping it, so that nothing outlives a crashed test binary.
	deathSignal syscall.Signal
}

func startProc(spec procSpec) (*proc, error) {
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.Dir = spec.dir
	cmd.Env = spec.env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C in the terminal reaches devstack only,
		// which then stops its children in order.
		Setpgid:   true,
		Pdeathsig: spec.deathSignal,
	}
	if spec.as != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: spec.as.uid, Gid: spec.as.gid}
	}
	var closer io.Closer
	switch {
	case spec.log != nil:
		cmd.Stdout, cmd.Stderr = spec.log, spec.log
	case spec.logPath != "":
		f, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("%s: open log: %w", spec.name, err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		closer = f
	}
	if err := cmd.Start(); err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &proc{name: spec.name, cmd: cmd, done: make(chan struct{}), logPath: spec.logPath}
	go func() {
		p.err = cmd.Wait()
		if closer != nil {
			closer.Close()
		}
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the process to exit; if it has not within
// grace, it is killed outright.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	// Kill the whole group: a postmaster that ignored us may have children.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %s after %s and was killed", p.name, grace, sig)
}

// halt stops the process, if there is one running, with sig, allowing it
// until ctx's deadline to exit (def without one).
func (p *proc) halt(ctx context.Context, sig syscall.Signal, def time.Duration) error {
	if p == nil {
		return nil
	}
	grace := def
	if d, ok := ctx.Deadline(); ok {
		grace = time.Until(d)
	}
	return p.stop(sig, grace)
}

// logTail returns the last lines of the process's log, for error messages.
func (p *proc) logTail(lines int) string {
	if p == nil || p.logPath == "" {
		return ""
	}
	return tail(p.logPath, lines)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// run runs a command to completion as the account, writing its output to
// logPath, and on failure returns an error holding the output's tail.
func run(ctx context.Context, as *account, dir, logPath string, env []string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if as != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: as.uid, Gid: as.gid}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if logPath != "" {
		_ = os.WriteFile(logPath, out.Bytes(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", filepath.Base(argv[0]), err, lastLines(out.String(), 15))
	}
	return nil
}

func lastLines(s string, n int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n")
}

// childEnv is the environment of the database processes: minimal, so that
// nothing from the caller's shell (PGDATA, PGPORT, ...) changes them.
func childEnv(home string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{"PATH=" + path, "HOME=" + home, "LC_ALL=C", "LANG=C", "TZ=UTC"}
}

// poll calls cond every interval until it reports done or ctx ends. It is
// how devstack waits: on conditions, never on sleeps. cond's error while not
// done is taken as transient and reported only if ctx ends; an error with
// done ends the wait with that error.
func poll(ctx context.Context, interval time.Duration, cond func(context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return err
		}
		if err != nil && ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// Synchronized returns a writer that serialises writes to w from several
// goroutines: a tool's progress and the API processes' output on one
// stderr, say.
func Synchronized(w io.Writer) io.Writer { return &syncWriter{w: w} }

// syncWriter serialises writes from several goroutines to one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// server is the process of a server devstack starts (a PostgreSQL node, an
// API, PgBouncer, pgpool-II, HAProxy), guarded by its mutex.
type server struct {
	mu   sync.Mutex
	proc *proc
}

// Pid is the server's process id, or 0 when it is not running. Benchmarks
// read its CPU time from /proc.
func (s *server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.pid()
}

// halt stops the server with sig, waiting up to ctx's deadline or def.
func (s *server) halt(ctx context.Context, sig syscall.Signal, def time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.halt(ctx, sig, def)
}

// findProgram is the first of paths that exists, else name on PATH, else
// an error that says how to install it (missing).
func findProgram(name string, paths []string, missing string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", errors.New(missing)
}

// answersOK reports whether a GET of url answers 200; while the server
// cannot be reached, false with the error.
func answersOK(ctx context.Context, client *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return true, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// alive reports whether p was started and has not exited.
func (p *proc) alive() bool { return p != nil && !p.exited() }

// pid returns the process id, or 0 when the process is not running.
func (p *proc) pid() int {
	if !p.alive() {
		return 0
	}
	return p.cmd.Process.Pid
}
