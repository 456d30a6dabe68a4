package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// ErrKeysUnavailable means a token names a key the service does not have
// and the issuer's key set (JWKS) cannot be fetched to look for it: the
// token may well be valid, so the answer is 503, not 401.
var ErrKeysUnavailable = errors.New("the token issuer's keys cannot be fetched")

// KeysConfig says where an issuer's keys are and how they are kept fresh.
type KeysConfig struct {
	// URL is the JWKS endpoint (AUTH_JWKS_URL).
	URL string
	// Refresh is how often the set is fetched in the background, so that
	// new keys are known before tokens use them and removed ones are
	// forgotten.
	Refresh time.Duration
	// MinRefresh bounds how often a token with an unknown kid makes the
	// service fetch the set: a client cannot make it hammer the issuer.
	MinRefresh time.Duration
	// Timeout bounds one fetch.
	Timeout time.Duration
	Client  *http.Client
	Logger  *slog.Logger
}

// maxJWKSBytes bounds a key set: real ones are a few kilobytes.
const maxJWKSBytes = 1 << 20

// Keys is the issuer's key set, fetched and cached. Signature checking,
// key parsing and kid/alg matching are keyfunc's and jwkset's
// (MicahParks); Keys decides when to fetch, and says whether a key that is
// not found is unknown (401) or could not be looked up (503).
//
// The last set fetched stays in use while the issuer is unreachable:
// tokens signed with known keys keep verifying through an issuer outage,
// and a key the issuer removed is forgotten at the next successful fetch.
type Keys struct {
	cfg KeysConfig

	set atomic.Pointer[keySet] // nil until the first successful fetch

	mu         sync.Mutex
	kidFetched time.Time     // when an unknown kid last started a fetch
	lastErr    error         // how the last finished fetch ended
	inflight   chan struct{} // closed when the fetch in flight ends
}

type keySet struct {
	kf      keyfunc.Keyfunc
	fetched time.Time
}

// NewKeys returns the key cache and starts fetching: once now, then every
// cfg.Refresh until ctx ends. It does not wait: the service starts while
// the issuer is down, and answers 503 to tokens it cannot check yet.
func NewKeys(ctx context.Context, cfg KeysConfig) *Keys {
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	k := &Keys{cfg: cfg}
	go k.refreshLoop(ctx)
	return k
}

func (k *Keys) refreshLoop(ctx context.Context) {
	t := time.NewTicker(k.cfg.Refresh)
	defer t.Stop()
	for {
		if err := k.fetch(ctx); err != nil && ctx.Err() == nil {
			k.cfg.Logger.Warn("cannot fetch the token issuer's keys; tokens signed with known keys still verify", "url", k.cfg.URL, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// State says whether a key set has been fetched, and how the last fetch
// ended (nil: fetched).
func (k *Keys) State() (haveKeys bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.set.Load() != nil, k.lastErr
}

// Keyfunc finds the key that verifies token. A kid the current set does not
// have makes it fetch the set again, at most every MinRefresh: that is how
// a rotation is picked up between background refreshes.
func (k *Keys) Keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if s := k.set.Load(); s != nil {
			key, err := s.kf.KeyfuncCtx(ctx)(t)
			if !errors.Is(err, jwkset.ErrKeyNotFound) {
				return key, err
			}
		}
		// Unknown kid, or no set yet.
		if err := k.refreshIfDue(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
		s := k.set.Load()
		if s == nil {
			return nil, ErrKeysUnavailable
		}
		return s.kf.KeyfuncCtx(ctx)(t)
	}
}

// refreshIfDue fetches the set for a token whose kid is unknown, unless
// such a fetch started less than MinRefresh ago: then it returns how the
// latest fetch (of any kind) ended, so that while the issuer is down the
// answer stays "unavailable" without asking it again. Concurrent callers
// share one fetch.
func (k *Keys) refreshIfDue(ctx context.Context) error {
	k.mu.Lock()
	if k.inflight == nil && !k.kidFetched.IsZero() && time.Since(k.kidFetched) < k.cfg.MinRefresh {
		err := k.lastErr
		k.mu.Unlock()
		return err
	}
	if k.inflight == nil {
		k.kidFetched = time.Now()
	}
	k.mu.Unlock()
	return k.fetch(ctx)
}

// fetch gets the set, or joins the fetch in flight.
func (k *Keys) fetch(ctx context.Context) error {
	k.mu.Lock()
	if wait := k.inflight; wait != nil {
		k.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.lastErr
	}
	done := make(chan struct{})
	k.inflight = done
	k.mu.Unlock()

	// The fetch is the cache's, not the request's: a client that goes
	// away does not fail it for the others waiting on it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.Timeout)
	s, err := k.get(fctx)
	cancel()
	if err == nil {
		k.set.Store(s)
	}
	k.mu.Lock()
	k.lastErr = err
	k.inflight = nil
	close(done)
	k.mu.Unlock()
	return err
}

func (k *Keys) get(ctx context.Context) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", k.cfg.URL, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", k.cfg.URL, err)
	}
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("GET %s: the key set is larger than %d bytes", k.cfg.URL, maxJWKSBytes)
	}
	kf, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", k.cfg.URL, err)
	}
	return &keySet{kf: kf, fetched: time.Now()}, nil
}
