// Package devissuer is a small token issuer for development and tests: it
// publishes a JSON Web Key Set and mints signed access tokens (ES256 JWTs)
// for any subject it is asked for.
//
// It is not an identity provider: whoever reaches it can mint any identity.
// devstack serves it on loopback only, and docker-compose only with the
// docker-compose.jwt.yml override; a deployment points AUTH_JWKS_URL at its real issuer
// (Auth0, Keycloak, Okta, Entra ID, Google, ...).
package devissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Paths the issuer serves.
const (
	JWKSPath  = "/.well-known/jwks.json"
	TokenPath = "/token"
)

// DefaultTTL is how long a minted token lives unless asked otherwise.
const DefaultTTL = time.Hour

// Issuer signs tokens with its newest key and publishes every key it has
// not retired, so that tokens signed before a rotation keep verifying.
type Issuer struct {
	issuer, audience string

	mu   sync.Mutex
	keys []signingKey // oldest first; the last one signs
}

type signingKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

// New returns an issuer whose tokens carry iss = issuer and aud = audience,
// with one fresh P-256 key.
func New(issuer, audience string) (*Issuer, error) {
	if issuer == "" || audience == "" {
		return nil, errors.New("devissuer: an issuer and an audience are required")
	}
	i := &Issuer{issuer: issuer, audience: audience}
	if _, err := i.Rotate(); err != nil {
		return nil, err
	}
	return i, nil
}

// Issuer is the iss of the tokens.
func (i *Issuer) Issuer() string { return i.issuer }

// Audience is the aud of the tokens.
func (i *Issuer) Audience() string { return i.audience }

// Rotate makes a new key the signing key and returns its kid. The old keys
// stay published until Retire.
func (i *Issuer) Rotate() (string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	kid := uuid.NewString()
	i.mu.Lock()
	i.keys = append(i.keys, signingKey{kid: kid, priv: priv})
	i.mu.Unlock()
	return kid, nil
}

// Retire stops publishing every key but the signing one: tokens signed
// with them no longer verify once verifiers refresh the key set.
func (i *Issuer) Retire() {
	i.mu.Lock()
	i.keys = i.keys[len(i.keys)-1:]
	i.mu.Unlock()
}

// SigningKey is the current key, for tests that sign tokens of their own
// (tampered, with other headers).
func (i *Issuer) SigningKey() (kid string, key *ecdsa.PrivateKey) {
	i.mu.Lock()
	defer i.mu.Unlock()
	k := i.keys[len(i.keys)-1]
	return k.kid, k.priv
}

// Mint returns a token for sub that expires after ttl (DefaultTTL if 0).
func (i *Issuer) Mint(sub string, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", errors.New("devissuer: a subject is required")
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	return i.Sign(jwt.MapClaims{
		"iss": i.issuer, "aud": i.audience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
	})
}

// Sign signs claims as they are with the current key (ES256, kid set).
func (i *Issuer) Sign(claims jwt.Claims) (string, error) {
	kid, key := i.SigningKey()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

// JWKS is the published key set, as JSON.
func (i *Issuer) JWKS() ([]byte, error) {
	i.mu.Lock()
	keys := append([]signingKey(nil), i.keys...)
	i.mu.Unlock()
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(&k.priv.PublicKey, jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.AlgES256, USE: jwkset.UseSig},
		})
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	return json.Marshal(set)
}

// TokenResponse is what the token endpoint answers.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Subject     string `json:"sub"`
}

// Handler serves the key set at JWKSPath, a discovery document at
// /.well-known/openid-configuration, and tokens at TokenPath: GET or POST
// with sub (any string; a UUID is the user id as is) and optionally ttl (a
// Go duration such as 10m), e.g. /token?sub=2c9d...&ttl=10m.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		b, err := i.JWKS()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":                                i.issuer,
			"jwks_uri":                              strings.TrimSuffix(i.issuer, "/") + JWKSPath,
			"token_endpoint":                        strings.TrimSuffix(i.issuer, "/") + TokenPath,
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	token := func(w http.ResponseWriter, r *http.Request) {
		sub := r.FormValue("sub")
		if sub == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "sub is required"})
			return
		}
		var ttl time.Duration
		if s := r.FormValue("ttl"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 || d > 24*time.Hour {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "ttl must be a duration between 1s and 24h, like 10m"})
				return
			}
			ttl = d
		}
		tok, err := i.Mint(sub, ttl)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error", "error_description": err.Error()})
			return
		}
		if ttl == 0 {
			ttl = DefaultTTL
		}
		writeJSON(w, http.StatusOK, TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(ttl.Seconds()), Subject: sub})
	}
	mux.HandleFunc("GET "+TokenPath, token)
	mux.HandleFunc("POST "+TokenPath, token)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// FetchToken asks the issuer at baseURL for a token for sub that lives ttl
// (0: DefaultTTL).
func FetchToken(ctx context.Context, client *http.Client, baseURL, sub string, ttl time.Duration) (TokenResponse, error) {
	form := url.Values{"sub": {sub}}
	if ttl > 0 {
		form.Set("ttl", ttl.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+TokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		return TokenResponse{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return TokenResponse{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Description string `json:"error_description"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return TokenResponse{}, fmt.Errorf("%s answered %s: %s", baseURL, resp.Status, e.Description)
	}
	var t TokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return TokenResponse{}, err
	}
	return t, nil
}
