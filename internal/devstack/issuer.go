package devstack

import (
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
	ln, err := listenLoopback(addr, "issuer", "the development issuer mints any identity for anyone")
	if err != nil {
		return nil, err
	}
	url := "http://" + ln.Addr().String()
	iss, err := devissuer.New(url+"/", IssuerAudience)
	if err != nil {
		ln.Close()
		return nil, err
	}
	i := &Issuer{Issuer: iss, URL: url}
	s.serve(ln, iss.Handler(), "issuer")
	s.mu.Lock()
	s.issuer = i
	s.mu.Unlock()
	return i, nil
}
