package devstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// HAProxy is an HAProxy (Debian's haproxy) in front of one HTTP server: it
// holds the clients' connections, sends the server at most MaxConn requests
// at once over connections it reuses from request to request (http-reuse
// always), and queues the requests beyond them in arrival order. Each of
// HAProxy's threads keeps idle connections of its own, so a few more than
// MaxConn may be open, never one per client. It is how a deployment keeps
// an API process's own connections few however many clients there are;
// rywbench's overload suite measures an API process behind one (-proxy
// haproxy).
type HAProxy struct {
	Port    int
	Backend string // the server's host:port
	MaxConn int

	bin     string
	dir     string
	logPath string
	conf    string

	server
}

// HAProxyBinary is where Debian's haproxy installs it.
const HAProxyBinary = "/usr/sbin/haproxy"

// haproxyUp is the path HAProxy answers itself (monitor-uri), without the
// server: devstack polls it until HAProxy listens.
const haproxyUp = "/haproxy-up"

// findHAProxy looks for haproxy where Debian installs it, then on PATH.
func findHAProxy() (string, error) {
	return findProgram("haproxy", []string{HAProxyBinary}, "devstack: haproxy not found: install HAProxy (apt-get install haproxy)")
}

// HaveHAProxy reports whether haproxy is installed.
func HaveHAProxy() bool {
	_, err := findHAProxy()
	return err == nil
}

// StartHAProxy starts an HAProxy in front of backend (host:port) with at
// most maxConn connections to it, its files in a new directory under dir,
// and waits until it answers. Stop it with Stop.
func StartHAProxy(ctx context.Context, dir, backend string, maxConn int) (*HAProxy, error) {
	bin, err := findHAProxy()
	if err != nil {
		return nil, err
	}
	if maxConn < 1 {
		return nil, fmt.Errorf("devstack: HAProxy's maxconn must be at least 1, got %d", maxConn)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "haproxy-")
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	h := &HAProxy{Port: port, Backend: backend, MaxConn: maxConn, bin: bin, dir: d, logPath: d + ".log"}
	h.conf = h.config()
	if err := os.WriteFile(filepath.Join(d, "haproxy.cfg"), []byte(h.conf), 0o600); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// StartHAProxy starts an HAProxy in front of backend (see the function of
// the same name), stopped with the stack.
func (s *Stack) StartHAProxy(ctx context.Context, backend string, maxConn int) (*HAProxy, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("devstack: the stack is closed")
	}
	s.mu.Unlock()
	h, err := StartHAProxy(ctx, s.Dir, backend, maxConn)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.closers = append(s.closers, h.Stop)
	s.mu.Unlock()
	s.logf("haproxy on port %d in front of %s (maxconn %d)", h.Port, backend, maxConn)
	return h, nil
}

// config is haproxy.cfg. It serves up to 4,096 clients (more would need
// a higher limit of open files than this machine gives: haproxy refuses
// to start). The timeouts are generous: a request waits in the queue up
// to 10 s, as long as rywbench's wrk waits for an answer.
func (h *HAProxy) config() string {
	return fmt.Sprintf(`# devstack: HAProxy in front of %[1]s
global
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 10s

frontend clients
    bind 127.0.0.1:%[2]d
    monitor-uri %[4]s
    default_backend server

backend server
    server s1 %[1]s maxconn %[3]d
`, h.Backend, h.Port, h.MaxConn, haproxyUp)
}

// Conf is the text of haproxy.cfg.
func (h *HAProxy) Conf() string { return h.conf }

// Start starts haproxy in the foreground (-db) and waits until it answers
// its monitor URI.
func (h *HAProxy) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc.alive() {
		return errors.New("haproxy is already running")
	}
	p, err := startProc(procSpec{
		name: "haproxy",
		argv: []string{h.bin, "-db", "-f", filepath.Join(h.dir, "haproxy.cfg")},
		dir:  h.dir, env: childEnv(h.dir), logPath: h.logPath, deathSignal: syscall.SIGTERM,
	})
	if err != nil {
		return err
	}
	h.proc = p
	ctx, cancel := withDefaultTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	err = poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return true, fmt.Errorf("haproxy exited during start-up: %v\n%s", p.err, p.logTail(15))
		}
		return answersOK(ctx, client, h.URL()+haproxyUp)
	})
	if err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("start haproxy: %w", err)
	}
	return nil
}

// Stop stops haproxy (SIGTERM: at once, closing its connections).
func (h *HAProxy) Stop(ctx context.Context) error {
	return h.halt(ctx, syscall.SIGTERM, 10*time.Second)
}

// URL is the address clients reach the server through.
func (h *HAProxy) URL() string { return "http://127.0.0.1:" + strconv.Itoa(h.Port) }
