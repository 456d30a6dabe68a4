package devstack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// APIOptions say how to run the API processes against the stack.
type APIOptions struct {
	// Binary is the API executable (cmd/api, built).
	Binary string
	// Instances is how many processes to run (default 1).
	Instances int
	// Addr is the first instance's listen address; the others take the
	// following ports. Port 0 picks free ports.
	Addr string
	// Env is added to the processes' environment after the stack's own
	// settings (DATABASE_URL, ...), so it can override them, e.g. RYW_MODE.
	Env []string
	// InstanceEnv, when set, adds settings for instance i (0-based) after
	// Env: REDIS_URL through a proxy for one instance only, say.
	InstanceEnv func(i int) []string
	// Output receives the processes' logs, each line prefixed with the
	// instance's name. Nil discards them.
	Output io.Writer
	// LogDir, when set (and Output is nil), sends each process's output
	// straight to <LogDir>/<name>.log instead: no pipe, no copy, as a
	// service manager would. Benchmarks use it so that the API's logging
	// costs what it costs in production.
	LogDir string
}

// API is one running API process.
type API struct {
	Name string // api1, api2, ...
	Addr string // host:port
	URL  string // http://host:port

	spec procSpec
	server
	out io.Writer
}

// StartAPI starts the API processes with the stack's connection settings
// and waits until each answers /healthz.
func (s *Stack) StartAPI(ctx context.Context, opts APIOptions) ([]*API, error) {
	if opts.Instances <= 0 {
		opts.Instances = 1
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Output == nil && opts.LogDir == "" {
		opts.Output = io.Discard
	}
	host, portStr, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("API address %q: %w", opts.Addr, err)
	}
	first, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("API address %q: bad port", opts.Addr)
	}
	out := &syncWriter{w: opts.Output}
	// The instances share one token key, as a deployment's must; opts.Env
	// may set another.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tokenKey := "RYW_TOKEN_KEY=" + hex.EncodeToString(key)
	var apis []*API
	for i := range opts.Instances {
		port := 0
		if first != 0 {
			port = first + i
			if err := checkFree(host, port); err != nil {
				return apis, err
			}
		} else if port, err = freePort(); err != nil {
			return apis, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		a := &API{Name: fmt.Sprintf("api%d", i+1), Addr: addr, URL: "http://" + addr, out: out}
		if opts.Output == nil {
			a.out = nil
		}
		env := append(os.Environ(), s.Env()...)
		// A development stack shows its internals on /readyz.
		env = append(env, "HTTP_ADDR="+addr, tokenKey, "READYZ_DETAILS=true")
		env = append(env, opts.Env...)
		if opts.InstanceEnv != nil {
			env = append(env, opts.InstanceEnv(i)...)
		}
		a.spec = procSpec{name: a.Name, argv: []string{opts.Binary}, env: env, deathSignal: syscall.SIGTERM}
		if a.out == nil {
			a.spec.logPath = filepath.Join(opts.LogDir, a.Name+".log")
		}
		apis = append(apis, a)
		s.mu.Lock()
		s.apis = append(s.apis, a)
		s.mu.Unlock()
		if err := a.Start(ctx); err != nil {
			return apis, err
		}
	}
	return apis, nil
}

func checkFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("API port %d on %s is not free (%v): stop what uses it or pick another with -addr", port, host, err)
	}
	return l.Close()
}

// Start starts the process and waits until /healthz answers 200.
func (a *API) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc.alive() {
		return fmt.Errorf("%s is already running", a.Name)
	}
	spec := a.spec
	var pw *io.PipeWriter
	if a.out != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		spec.log = pw
		go prefixLines(pr, a.out, a.Name)
	}
	p, err := startProc(spec)
	if err != nil {
		if pw != nil {
			pw.Close()
		}
		return err
	}
	a.proc = p
	if pw != nil {
		go func() { <-p.done; pw.Close() }()
	}

	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	err = poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.exited() {
			if spec.logPath != "" {
				return true, fmt.Errorf("%s exited during start-up: %v\n%s", a.Name, p.err, p.logTail(15))
			}
			return true, fmt.Errorf("%s exited during start-up: %v (its log is above)", a.Name, p.err)
		}
		return answersOK(ctx, client, a.URL+"/healthz")
	})
	if err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start %s: %w", a.Name, err)
	}
	return nil
}

// Stop sends SIGTERM, lets the process shut down gracefully, and waits.
func (a *API) Stop(ctx context.Context) error {
	return a.halt(ctx, syscall.SIGTERM, 20*time.Second)
}

// Running reports whether the process is alive.
func (a *API) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc.alive()
}

func prefixLines(r io.Reader, w io.Writer, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fmt.Fprintf(w, "[%s] %s\n", prefix, sc.Bytes())
	}
	_, _ = io.Copy(io.Discard, r)
}
