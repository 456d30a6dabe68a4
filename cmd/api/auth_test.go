package main

// Tests of AUTH_MODE=jwt with a real in-process issuer (internal/devissuer
// behind httptest: a JWKS and ES256 tokens), against the real stack. The
// rest of the suite runs in jwt mode too with RYW_TEST_AUTH=jwt.

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devissuer"
)

// bearer adds Authorization: Bearer tok.
func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func mint(t *testing.T, iss *devissuer.Issuer, user uuid.UUID) string {
	t.Helper()
	tok, err := iss.Mint(user.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// profileName reads a user's stored name on the primary ("" for none).
func profileName(t *testing.T, user uuid.UUID) string {
	t.Helper()
	var name *string
	if err := stack.Primary.QueryRow(t.Context(), []any{&name}, "SELECT max(name) FROM users WHERE id = $1", user); err != nil {
		t.Fatal(err)
	}
	if name == nil {
		return ""
	}
	return *name
}

const profileBody = `{"email":"a@example.com","name":%q}`

// TestJWTUserCannotReadOrWriteAnotherUsersProfile is the attack of the
// issue: a stranger who knows a user's id reads their email and overwrites
// their profile. In jwt mode the id comes only from a verified token.
func TestJWTUserCannotReadOrWriteAnotherUsersProfile(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, jwtEnv()...))
	alice, mallory := uuid.New(), uuid.New()
	aliceTok, malloryTok := mint(t, testIssuer, alice), mint(t, testIssuer, mallory)
	if r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "Alice")), bearer(aliceTok)); r.status != http.StatusOK {
		t.Fatalf("alice saves her profile = %s", r)
	}
	if r := do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(aliceTok)); r.status != http.StatusOK || !strings.Contains(string(r.body), `"Alice"`) {
		t.Fatalf("alice reads her profile = %s", r)
	}

	demoHeader := func(id uuid.UUID) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("X-Demo-UserId", id.String()) }
	}
	attacks := []struct {
		name   string
		with   []func(*http.Request)
		status int
		code   string
	}{
		{"the victim's id in the demo header, no token", []func(*http.Request){demoHeader(alice)}, 400, "demo_identity_refused"},
		{"the victim's id in the demo header, with the attacker's token", []func(*http.Request){bearer(malloryTok), demoHeader(alice)}, 400, "demo_identity_refused"},
		{"no token at all", nil, 401, "unauthenticated"},
	}
	for _, a := range attacks {
		for _, req := range []struct{ method, path, body string }{
			{http.MethodGet, "/api/me", ""},
			{http.MethodPost, "/api/me/profile", fmt.Sprintf(profileBody, "pwned")},
		} {
			ct := ""
			if req.body != "" {
				ct = "application/json"
			}
			r := do(t, req.method, api+req.path, uuid.Nil, ct, strings.NewReader(req.body), a.with...)
			if r.status != a.status || !strings.Contains(string(r.body), `"code":"`+a.code+`"`) || strings.Contains(string(r.body), "Alice") {
				t.Errorf("%s, %s %s = %s; want %d %s", a.name, req.method, req.path, r, a.status, a.code)
			}
			if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer realm="ryw", error="invalid_token"`) {
				t.Errorf("%s: 401 without a Bearer challenge: %q", a.name, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	// With his own token the attacker reaches only his own profile.
	if r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "pwned")), bearer(malloryTok)); r.status != http.StatusOK || !strings.Contains(string(r.body), mallory.String()) {
		t.Errorf("mallory saves his own profile = %s", r)
	}
	if r := do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(malloryTok)); strings.Contains(string(r.body), "Alice") {
		t.Errorf("mallory's read shows alice's profile: %s", r)
	}
	if got := profileName(t, alice); got != "Alice" {
		t.Errorf("alice's stored name is %q after the attacks; want Alice", got)
	}
	// The catalog stays public; a bad token on it is still refused.
	if r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil); r.status != http.StatusOK {
		t.Errorf("anonymous GET /api/products = %s; want 200", r)
	}
	if r := do(t, http.MethodGet, api+"/api/products", uuid.Nil, "", nil, bearer("nope")); r.status != http.StatusUnauthorized {
		t.Errorf("GET /api/products with a garbage token = %s; want 401", r)
	}
}

// TestJWTSubjectsThatAreNotUUIDsMapToStableUsers: sub "auth0|abc" is a
// UUIDv5 of (iss, sub), the same in every token, and another issuer's same
// sub is another user.
func TestJWTSubjectsThatAreNotUUIDsMapToStableUsers(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, jwtEnv()...))
	sub := "auth0|" + uuid.NewString()[:8]
	tok1, err := testIssuer.Mint(sub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "Sub")), bearer(tok1))
	var p struct{ ID uuid.UUID }
	if err := json.Unmarshal(r.body, &p); r.status != http.StatusOK || err != nil {
		t.Fatalf("save with sub %q = %s", sub, r)
	}
	if p.ID.Version() != 5 {
		t.Errorf("user id %s for sub %q is not a UUIDv5", p.ID, sub)
	}
	tok2, _ := testIssuer.Mint(sub, 2*time.Hour) // another token, same subject
	if r := do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(tok2)); r.status != http.StatusOK || !strings.Contains(string(r.body), p.ID.String()) {
		t.Errorf("a second token for %q = %s; want the same user %s", sub, r, p.ID)
	}
	upper := uuid.New()
	tok3, _ := testIssuer.Mint(strings.ToUpper(upper.String()), time.Hour)
	r = do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "Upper")), bearer(tok3))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), upper.String()) {
		t.Errorf("a UUID sub in upper case = %s; want the user %s itself", r, upper)
	}
}

// TestJWTHostileTokensAreRefused sends tokens an attacker would try. Each
// gets 401 (or 400 for the demo header), never a 5xx, and no row changes.
func TestJWTHostileTokensAreRefused(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, jwtEnv()...))
	victim := uuid.New()
	saveWith := func(tok string) response {
		return do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "Victim")), bearer(tok))
	}
	if r := saveWith(mint(t, testIssuer, victim)); r.status != http.StatusOK {
		t.Fatalf("victim saves = %s", r)
	}
	kid, key := testIssuer.SigningKey()
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": testIssuer.Issuer(), "aud": testIssuer.Audience(), "sub": victim.String(),
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, k any, kid string, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(jwt.SigningMethodES256, key, kid, claims(nil))
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	jwks, err := testIssuer.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	hostile := map[string]string{
		"empty":                        "",
		"one segment":                  "abc",
		"two segments":                 "abc.def",
		"garbage segments":             "a.b.c",
		"not base64":                   "!!!.***.@@@",
		"five segments (JWE shape)":    good + ".x.y",
		"header only":                  parts[0] + "..",
		"expired":                      sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })),
		"not valid yet":                sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })),
		"issued in the future":         sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })),
		"no exp":                       sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { delete(c, "exp") })),
		"wrong issuer":                 sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" })),
		"no issuer":                    sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { delete(c, "iss") })),
		"wrong audience":               sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { c["aud"] = "another-api" })),
		"no audience":                  sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { delete(c, "aud") })),
		"no sub":                       sign(jwt.SigningMethodES256, key, kid, claims(func(c jwt.MapClaims) { delete(c, "sub") })),
		"alg none":                     b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		"alg none, kid set":            b64([]byte(`{"alg":"none","kid":"`+kid+`"}`)) + "." + parts[1] + ".",
		"HS256 keyed with the JWKS":    sign(jwt.SigningMethodHS256, jwks, kid, claims(nil)),
		"HS256 keyed with the kid":     sign(jwt.SigningMethodHS256, []byte(kid), kid, claims(nil)),
		"unknown kid":                  sign(jwt.SigningMethodES256, otherEC, uuid.NewString(), claims(nil)),
		"known kid, another key":       sign(jwt.SigningMethodES256, otherEC, kid, claims(nil)),
		"no kid, another key":          sign(jwt.SigningMethodES256, otherEC, "", claims(nil)),
		"RS256, key not published":     sign(jwt.SigningMethodRS256, otherRSA, kid, claims(nil)),
		"EdDSA, key not published":     sign(jwt.SigningMethodEdDSA, otherEd, kid, claims(nil)),
		"ES384 header on an ES256 key": b64([]byte(`{"alg":"ES384","kid":"`+kid+`"}`)) + "." + parts[1] + "." + parts[2],
		"tampered payload":             parts[0] + "." + b64([]byte(`{"iss":"`+testIssuer.Issuer()+`","aud":"`+testIssuer.Audience()+`","sub":"`+victim.String()+`","exp":`+fmt.Sprint(now.Add(time.Hour).Unix())+`,"name":"x"}`)) + "." + parts[2],
		"signature stripped":           parts[0] + "." + parts[1] + ".",
		"signature of another token":   parts[0] + "." + parts[1] + "." + strings.Split(mint(t, testIssuer, uuid.New()), ".")[2],
		"over 8 KB":                    good + strings.Repeat("A", 9000),
		"kid with a path":              sign(jwt.SigningMethodES256, key, "../../etc/passwd", claims(nil)),
		"huge exp number":              sign(jwt.SigningMethodES256, otherEC, kid, claims(func(c jwt.MapClaims) { c["exp"] = 1e300 })),
	}
	rowsBefore := countProfiles(t)
	for name, tok := range hostile {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var r response
			if method == http.MethodGet {
				r = do(t, method, api+"/api/me", uuid.Nil, "", nil, bearer(tok))
			} else {
				r = saveWith(tok)
			}
			if r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), `"code":"unauthenticated"`) {
				t.Errorf("%s: %s = %s; want 401 unauthenticated", name, method, r)
			}
			if strings.Contains(string(r.body), "Victim") {
				t.Errorf("%s: %s leaked the victim's profile: %s", name, method, r)
			}
		}
	}
	// Headers that are not a single bearer token.
	for name, with := range map[string]func(*http.Request){
		"Basic scheme":          func(r *http.Request) { r.Header.Set("Authorization", "Basic "+b64([]byte("a:b"))) },
		"bare token, no scheme": func(r *http.Request) { r.Header.Set("Authorization", good) },
		"two Authorization": func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer "+good)
			r.Header.Add("Authorization", "Bearer "+good)
		},
		"Bearer with no token":   func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") },
		"token in a query param": func(r *http.Request) { r.URL.RawQuery = "access_token=" + good },
	} {
		if r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "pwned")), with); r.status != http.StatusUnauthorized {
			t.Errorf("%s = %s; want 401", name, r)
		}
	}
	if got := profileName(t, victim); got != "Victim" {
		t.Errorf("the victim's name is %q after the hostile tokens; want Victim", got)
	}
	if n := countProfiles(t); n != rowsBefore {
		t.Errorf("%d profiles before the hostile tokens, %d after", rowsBefore, n)
	}
	// The control: the same request with the good token does go through.
	if r := saveWith(good); r.status != http.StatusOK {
		t.Errorf("the untampered token = %s; want 200 (the control)", r)
	}
	if r := do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+good) }); r.status != http.StatusOK {
		t.Errorf("the scheme in lower case = %s; want 200 (RFC 7235: case-insensitive)", r)
	}
}

func countProfiles(t *testing.T) int {
	t.Helper()
	var n int
	if err := stack.Primary.QueryRow(t.Context(), []any{&n}, "SELECT count(*) FROM users"); err != nil {
		t.Fatal(err)
	}
	return n
}

// switchable is an issuer whose JWKS endpoint can be made unreachable: the
// connection is dropped without an answer.
type switchable struct {
	iss  *devissuer.Issuer
	down atomic.Bool
	hits atomic.Int64
	srv  *httptest.Server
}

func newSwitchable(t *testing.T) *switchable {
	t.Helper()
	iss, err := devissuer.New("https://rotating.ryw.test/", "ryw-api")
	if err != nil {
		t.Fatal(err)
	}
	s := &switchable{iss: iss}
	h := iss.Handler()
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			panic(http.ErrAbortHandler)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *switchable) env(extra ...string) []string {
	return append([]string{
		"AUTH_MODE=jwt", "AUTH_JWKS_URL=" + s.srv.URL + devissuer.JWKSPath,
		"AUTH_ISSUER=" + s.iss.Issuer(), "AUTH_AUDIENCE=" + s.iss.Audience(),
	}, extra...)
}

// TestJWTKeyRotationNeedsNoRestart: a token signed with a key published
// after start-up verifies (the unknown kid fetches the set again), old
// tokens verify while their key is published, and not once it is retired.
func TestJWTKeyRotationNeedsNoRestart(t *testing.T) {
	is := newSwitchable(t)
	api, _ := startRun(t, stackEnv(t, is.env("AUTH_JWKS_MIN_REFRESH=1s", "AUTH_JWKS_REFRESH=200ms")...))
	user := uuid.New()
	saveProfile := func(tok string) response {
		return do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "R")), bearer(tok))
	}
	old := mint(t, is.iss, user)
	if r := saveProfile(old); r.status != http.StatusOK {
		t.Fatalf("before the rotation = %s", r)
	}
	if _, err := is.iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	fresh := mint(t, is.iss, user)
	if r := saveProfile(fresh); r.status != http.StatusOK {
		t.Errorf("a token signed with the new key = %s; want 200 without a restart", r)
	}
	if r := saveProfile(old); r.status != http.StatusOK {
		t.Errorf("a token signed with the old, still published key = %s; want 200", r)
	}
	is.iss.Retire()
	waitFor(t, func() bool { return saveProfile(old).status == http.StatusUnauthorized })
	if r := saveProfile(fresh); r.status != http.StatusOK {
		t.Errorf("the new key after the old one was retired = %s; want 200", r)
	}
}

// TestJWTIssuerDownAnswers503OnlyWhenNoCachedKeyVerifies: while the JWKS
// is unreachable, tokens signed with cached keys still verify; a token
// whose key cannot be fetched gets 503 (it may be valid), not 401; an
// unknown kid does not make every request hit the issuer. (Recovery
// without a restart: TestJWTStartsWhileTheIssuerIsDown.)
func TestJWTIssuerDownAnswers503OnlyWhenNoCachedKeyVerifies(t *testing.T) {
	is := newSwitchable(t)
	api, _ := startRun(t, stackEnv(t, is.env("AUTH_JWKS_MIN_REFRESH=1h", "AUTH_JWKS_REFRESH=1h")...))
	user := uuid.New()
	get := func(tok string) response { return do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(tok)) }
	cached := mint(t, is.iss, user)
	if r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(fmt.Sprintf(profileBody, "D")), bearer(cached)); r.status != http.StatusOK {
		t.Fatalf("with the issuer up = %s", r)
	}
	is.down.Store(true)
	if _, err := is.iss.Rotate(); err != nil { // a key this service has not seen
		t.Fatal(err)
	}
	uncached := mint(t, is.iss, user)
	if r := get(cached); r.status != http.StatusOK {
		t.Errorf("a cached key with the issuer down = %s; want 200", r)
	}
	r := get(uncached)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `"code":"auth_unavailable"`) {
		t.Errorf("a key that cannot be fetched = %s; want 503 auth_unavailable", r)
	}
	// Within AUTH_JWKS_MIN_REFRESH the failed fetch is not repeated: a
	// client cannot turn its requests into requests to the issuer.
	hits := is.hits.Load()
	for range 20 {
		if r := get(uncached); r.status != http.StatusServiceUnavailable {
			t.Fatalf("= %s; want 503", r)
		}
	}
	if n := is.hits.Load() - hits; n != 0 {
		t.Errorf("20 requests with an unknown kid made %d fetches of the key set; want 0 within AUTH_JWKS_MIN_REFRESH", n)
	}
	// A token that is expired anyway is refused as such (401), even with an
	// unknown key and the issuer down, and costs the issuer nothing.
	expired, err := is.iss.Sign(jwt.MapClaims{"iss": is.iss.Issuer(), "aud": is.iss.Audience(), "sub": user.String(), "exp": time.Now().Add(-time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if r := get(expired); r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "expired") {
		t.Errorf("an expired token of an unknown key, issuer down = %s; want 401 expired", r)
	}
	if n := is.hits.Load() - hits; n != 0 {
		t.Errorf("an expired token made %d fetches of the key set; want 0", n)
	}
	// Known keys still verify: degraded, not unavailable.
	if _, r := readyz(t, api); r.Status != "degraded" || r.Issuer == nil || r.Issuer.Up {
		t.Errorf("/readyz with cached keys and the issuer down = %+v; want degraded", r)
	}
}

// TestJWTStartsWhileTheIssuerIsDown: the service starts, answers 503 to
// tokens it cannot check yet, and 200 once the issuer answers.
func TestJWTStartsWhileTheIssuerIsDown(t *testing.T) {
	is := newSwitchable(t)
	is.down.Store(true)
	api, _ := startRun(t, stackEnv(t, is.env("AUTH_JWKS_MIN_REFRESH=1s")...))
	tok := mint(t, is.iss, uuid.New())
	if r := do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(tok)); r.status != http.StatusServiceUnavailable {
		t.Errorf("with the issuer never reached = %s; want 503", r)
	}
	// Nobody can be identified: not ready, so that a load balancer keeps
	// this instance out of rotation.
	if code, r := readyz(t, api); code != http.StatusServiceUnavailable || r.Issuer == nil || r.Issuer.Up {
		t.Errorf("/readyz with no key fetched = %d %+v; want 503 with the issuer down", code, r)
	}
	is.down.Store(false)
	waitFor(t, func() bool {
		return do(t, http.MethodGet, api+"/api/me", uuid.Nil, "", nil, bearer(tok)).status == http.StatusNotFound // no profile yet: authenticated
	})
	if code, r := readyz(t, api); code != http.StatusOK || r.Issuer == nil || !r.Issuer.Up {
		t.Errorf("/readyz with the keys fetched = %d %+v; want 200 with the issuer up", code, r)
	}
}
