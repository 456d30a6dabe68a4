package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// isLoopbackHost says whether host (a name or an address, no port) is this
// machine.
func isLoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// listenLoopback listens on addr, which must be a loopback address (port 0
// picks a free port): what the stack serves there (a token issuer that
// mints any identity, a lab that stops databases) is for this machine only.
// why says so in the error.
func listenLoopback(addr, what, why string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("devstack: %s address %q: %w", what, addr, err)
	}
	if !isLoopbackHost(host) {
		return nil, fmt.Errorf("devstack: %s; serve it on loopback, not %q", why, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devstack: %s: %w", what, err)
	}
	return ln, nil
}

// serve serves h on ln until the stack closes.
func (s *Stack) serve(ln net.Listener, h http.Handler, what string) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(s.log, "devstack: %s stopped: %v\n", what, err)
		}
	}()
	s.mu.Lock()
	s.closers = append(s.closers, func(ctx context.Context) error { return srv.Shutdown(ctx) })
	s.mu.Unlock()
}
