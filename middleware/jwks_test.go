package middleware

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer publishes a key set of marshalled keys and counts fetches.
type jwksServer struct {
	mu    sync.Mutex
	keys  []jwkset.JWKMarshal
	hits  atomic.Int64
	gate  chan struct{} // when set, fetches wait for it
	srv   *httptest.Server
	extra []map[string]any // raw keys, for what jwkset would not marshal
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		gate := s.gate
		var keys []any
		for _, k := range s.keys {
			keys = append(keys, k)
		}
		for _, k := range s.extra {
			keys = append(keys, k)
		}
		s.mu.Unlock()
		if gate != nil {
			<-gate
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) publish(t *testing.T, key any, kid, alg, use string, private bool) {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{
		Marshal:  jwkset.JWKMarshalOptions{Private: private},
		Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(alg), USE: jwkset.USE(use)},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.keys = append(s.keys, j.Marshal())
	s.mu.Unlock()
}

const testIss, testAud = "https://issuer.test/", "api"

func verifier(t *testing.T, url string, minRefresh time.Duration) *Verifier {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	keys := NewKeys(ctx, KeysConfig{URL: url, Refresh: time.Hour, MinRefresh: minRefresh, Timeout: 5 * time.Second})
	return NewVerifier(keys, VerifierConfig{Issuer: testIss, Audience: testAud, Leeway: time.Second})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, exp time.Time) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, jwt.MapClaims{"iss": testIss, "aud": testAud, "sub": "u1", "exp": exp.Unix()})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKeysSkipWhatCannotVerify: one key the library cannot parse does not
// stop the others; a published private key and an encryption key are never
// used; a token without kid is checked only against keys for its alg.
func TestKeysSkipWhatCannotVerify(t *testing.T) {
	s := newJWKSServer(t)
	good, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaked, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, _ := rsa.GenerateKey(rand.Reader, 2048)
	s.publish(t, &good.PublicKey, "good", "ES256", "sig", false)
	s.publish(t, leaked, "leaked", "ES256", "sig", true)
	s.publish(t, &enc.PublicKey, "enc", "RSA-OAEP", "enc", false)
	s.extra = append(s.extra, map[string]any{"kty": "EC", "crv": "secp256k1", "kid": "odd", "x": "AA", "y": "AA"})
	v := verifier(t, s.srv.URL, time.Hour)
	exp := time.Now().Add(time.Hour)
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, good, "good", exp)); err != nil {
		t.Errorf("the good key, next to an unparseable one: %v", err)
	}
	for name, tok := range map[string]string{
		"signed with the published private key": sign(t, jwt.SigningMethodES256, leaked, "leaked", exp),
		"RS256 with the encryption key's kid":   sign(t, jwt.SigningMethodRS256, enc, "enc", exp),
		"RS256 without kid, encryption key":     sign(t, jwt.SigningMethodRS256, enc, "", exp),
	} {
		if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v; want ErrUnauthenticated", name, err)
		}
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, good, "", exp)); err != nil {
		t.Errorf("ES256 without kid, the good key: %v", err)
	}
}

// TestKeysShareOneFetchAndLimitThem: concurrent tokens with an unknown kid
// cost the issuer one fetch, and more within MinRefresh cost none.
func TestKeysShareOneFetchAndLimitThem(t *testing.T) {
	s := newJWKSServer(t)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.publish(t, &k1.PublicKey, "k1", "ES256", "sig", false)
	v := verifier(t, s.srv.URL, time.Hour)
	// Once the start-up fetch is done, no unknown kid has cost a fetch yet.
	for ready, _ := v.keys.State(); !ready; ready, _ = v.keys.State() {
		time.Sleep(time.Millisecond)
	}
	exp := time.Now().Add(time.Hour)
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, k1, "k1", exp)); err != nil {
		t.Fatal(err)
	}
	before := s.hits.Load()
	// A rotation, and a fetch that takes a while, during which many
	// requests with the new kid arrive.
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.publish(t, &k2.PublicKey, "k2", "ES256", "sig", false)
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	tok := sign(t, jwt.SigningMethodES256, k2, "k2", exp)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	for deadline := time.Now().Add(30 * time.Second); s.hits.Load() == before; { // the first fetch has reached the issuer
		if time.Now().After(deadline) {
			t.Fatal("no fetch of the key set for a new kid")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a token of the new key: %v", err)
		}
	}
	if n := s.hits.Load() - before; n != 1 {
		t.Errorf("20 concurrent tokens with a new kid made %d fetches; want 1", n)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for range 10 {
		if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, other, "nope", exp)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("an unknown kid right after a fetch: %v; want ErrUnauthenticated", err)
		}
	}
	if n := s.hits.Load() - before; n != 1 {
		t.Errorf("unknown kids within MinRefresh made %d more fetches; want 0", n-1)
	}
}

// TestKeysHonourTheRequestsDeadline: a request that waits for a slow fetch
// gives up at its own deadline with that error (not "unavailable"), and
// the fetch still completes for the others.
func TestKeysHonourTheRequestsDeadline(t *testing.T) {
	s := newJWKSServer(t)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.publish(t, &k1.PublicKey, "k1", "ES256", "sig", false)
	gate := make(chan struct{})
	s.gate = gate
	v := verifier(t, s.srv.URL, time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	tok := sign(t, jwt.SigningMethodES256, k1, "k1", time.Now().Add(time.Hour))
	if _, err := v.Verify(ctx, tok); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a request whose deadline passes during the fetch: %v; want context.DeadlineExceeded", err)
	}
	close(gate)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Errorf("after the fetch: %v", err)
	}
}
