package middleware

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// ErrKeysUnavailable means a token names a key the service does not have
// and the issuer's key set (JWKS) cannot be fetched to look for it: the
// token may well be valid, so the answer is 503, not 401.
var ErrKeysUnavailable = errors.New("the token issuer's keys cannot be fetched")

// errUnknownKey means no usable key of the set matches the token.
var errUnknownKey = errors.New("no key of the issuer's key set matches the token")

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

// Keys is the issuer's key set, fetched and cached. Parsing each JSON Web
// Key into a crypto key is jwkset's (MicahParks), checking signatures
// golang-jwt's; Keys decides which keys are usable, which key a token may
// be checked with, when to fetch, and whether a key that is not found is
// unknown (401) or could not be looked up (503).
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

// keySet is one fetched set: the usable verification keys.
type keySet struct {
	keys []jwk
}

type jwk struct {
	kid      string
	alg, use string // "" when the JWKS leaves them out
	key      crypto.PublicKey
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
		if err := k.wait(ctx, k.fetch()); err != nil && ctx.Err() == nil {
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

// Keyfunc finds the key that verifies t. Before a kid the current set does
// not have makes it fetch the set again (at most every MinRefresh: that is
// how a rotation is picked up between background refreshes), precheck must
// accept the token's claims, so that an expired or foreign token is
// refused (401) without costing the issuer a request, even while it is down.
func (k *Keys) Keyfunc(ctx context.Context, precheck func(*jwt.Token) error) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if s := k.set.Load(); s != nil {
			key, err := s.find(t)
			if !errors.Is(err, errUnknownKey) {
				return key, err
			}
		}
		if err := precheck(t); err != nil {
			return nil, err
		}
		if err := k.refreshIfDue(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
		s := k.set.Load()
		if s == nil {
			return nil, ErrKeysUnavailable
		}
		return s.find(t)
	}
}

// find picks the key for t: the one its kid names, or, without a kid, every
// key that may verify it. A key is usable for a token when its use is sig
// (or unset) and its alg is the token's (or unset).
func (s *keySet) find(t *jwt.Token) (any, error) {
	alg, _ := t.Header["alg"].(string)
	usable := func(k jwk) bool { return (k.use == "" || k.use == "sig") && (k.alg == "" || k.alg == alg) }
	kid, hasKid := t.Header["kid"]
	if hasKid {
		id, ok := kid.(string)
		if !ok {
			return nil, errors.New("the token's kid is not a string")
		}
		for _, k := range s.keys {
			if k.kid == id {
				if !usable(k) {
					return nil, fmt.Errorf("key %q is not for %s signatures", id, alg)
				}
				return k.key, nil
			}
		}
		return nil, errUnknownKey
	}
	var set jwt.VerificationKeySet
	for _, k := range s.keys {
		if usable(k) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	if len(set.Keys) == 0 {
		return nil, errUnknownKey
	}
	return set, nil
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
	return k.wait(ctx, k.fetch())
}

// wait waits for the fetch that done ends, or for ctx, and says how the
// fetch ended.
func (k *Keys) wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastErr
}

// fetch starts a fetch of the set, or joins the one in flight, and returns
// a channel closed when it ends. The fetch is the cache's, not a
// request's: it runs on its own, bounded by Timeout, so that a client that
// goes away or times out fails neither it nor the others waiting on it.
func (k *Keys) fetch() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight != nil {
		return k.inflight
	}
	done := make(chan struct{})
	k.inflight = done
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Timeout)
		s, err := k.get(ctx)
		cancel()
		if err == nil {
			k.set.Store(s)
		}
		k.mu.Lock()
		k.lastErr = err
		k.inflight = nil
		close(done)
		k.mu.Unlock()
	}()
	return done
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
	return k.parse(raw)
}

// parse keeps the set's usable verification keys. A key that cannot be
// parsed (an unsupported curve, say) is skipped and logged, so that one
// odd key does not stop every update; a key that carries private material
// is refused and logged as an error, since whoever can read the set can
// then mint tokens. Only a set with no usable key at all is an error.
func (k *Keys) parse(raw []byte) (*keySet, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("GET %s: not a JSON Web Key Set: %w", k.cfg.URL, err)
	}
	s := &keySet{}
	for i, m := range set.Keys {
		switch {
		case m.KTY == jwkset.KtyOct || m.K != "":
			k.cfg.Logger.Error("the token issuer publishes a symmetric key; it is ignored, and anyone who read it can mint tokens: remove it", "url", k.cfg.URL, "kid", m.KID)
			continue
		case m.D != "" || m.P != "" || m.Q != "":
			k.cfg.Logger.Error("the token issuer publishes a private key; it is ignored, and anyone who read it can mint tokens: remove it and rotate", "url", k.cfg.URL, "kid", m.KID)
			continue
		case m.USE != "" && m.USE != jwkset.UseSig:
			continue // an encryption key: never for signatures
		}
		key, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			k.cfg.Logger.Warn("a key of the token issuer's set cannot be used; skipped", "url", k.cfg.URL, "index", i, "kid", m.KID, "err", err)
			continue
		}
		s.keys = append(s.keys, jwk{kid: m.KID, alg: string(m.ALG), use: string(m.USE), key: key.Key()})
	}
	if len(s.keys) == 0 {
		return nil, fmt.Errorf("GET %s: the key set has no usable signature key (%d keys)", k.cfg.URL, len(set.Keys))
	}
	return s, nil
}
