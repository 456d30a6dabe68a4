package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ryw-go/ryw/internal/devissuer"
)

// IssuerAudience is the aud of the development issuer's tokens: the API's
// AUTH_AUDIENCE.
const IssuerAudience = "ryw-api"

// Issuer is a development token issuer (internal/devissuer) served on
// loopback, for APIs run with AUTH_MODE=jwt.
type Issuer struct {
	*devissuer.Issuer
	URL string // where it answers, e.g. http://127.0.0.1:8090
	srv *http.Server
}

// Env is what an API needs to trust the issuer.
func (i *Issuer) Env() []string {
	return []string{
		"AUTH_MODE=jwt",
		"AUTH_JWKS_URL=" + i.URL + devissuer.JWKSPath,
		"AUTH_ISSUER=" + i.Issuer.Issuer(),
		"AUTH_AUDIENCE=" + i.Audience(),
	}
}

// StartIssuer serves a development issuer on addr, which must be a
// loopback address (port 0 picks a free port): anyone who reaches it can
// mint any identity. Its iss is its own URL. Close stops it.
func (s *Stack) StartIssuer(addr string) (*Issuer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("devstack: issuer address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("devstack: the development issuer mints any identity for anyone; serve it on loopback, not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devstack: issuer: %w", err)
	}
	url := "http://" + ln.Addr().String()
	iss, err := devissuer.New(url+"/", IssuerAudience)
	if err != nil {
		ln.Close()
		return nil, err
	}
	i := &Issuer{Issuer: iss, URL: url, srv: &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := i.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(s.log, "devstack: issuer stopped: %v\n", err)
		}
	}()
	s.mu.Lock()
	s.issuer = i
	s.mu.Unlock()
	return i, nil
}

func (i *Issuer) stop(ctx context.Context) error { return i.srv.Shutdown(ctx) }
