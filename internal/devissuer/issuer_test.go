package devissuer

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// TestTokensVerifyAgainstThePublishedKeys: what the issuer mints verifies
// with its JWKS, before and after a
// rotation, and a retired key's tokens stop verifying.
func TestTokensVerifyAgainstThePublishedKeys(t *testing.T) {
	iss, err := New("https://issuer.test/", "ryw-api")
	if err != nil {
		t.Fatal(err)
	}
	verify := func(tok string) error {
		raw, err := iss.JWKS()
		if err != nil {
			t.Fatal(err)
		}
		var set jwkset.JWKSMarshal
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatal(err)
		}
		byKid := func(tk *jwt.Token) (any, error) {
			for _, m := range set.Keys {
				if m.KID == tk.Header["kid"] {
					k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
					return k.Key(), err
				}
			}
			return nil, errors.New("unknown kid")
		}
		_, err = jwt.Parse(tok, byKid, jwt.WithValidMethods([]string{"ES256"}),
			jwt.WithIssuer("https://issuer.test/"), jwt.WithAudience("ryw-api"), jwt.WithExpirationRequired())
		return err
	}
	old, err := iss.Mint("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(old); err != nil {
		t.Fatalf("a fresh token does not verify: %v", err)
	}
	if _, err := iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	fresh, _ := iss.Mint("alice", time.Minute)
	if err := verify(fresh); err != nil {
		t.Errorf("a token of the new key: %v", err)
	}
	if err := verify(old); err != nil {
		t.Errorf("a token of the old, still published key: %v", err)
	}
	iss.Retire()
	if err := verify(old); err == nil {
		t.Error("a token of a retired key still verifies")
	}
	if _, err := New("", "a"); err == nil {
		t.Error("an issuer without iss was created")
	}
}

func TestTokenEndpoint(t *testing.T) {
	iss, err := New("https://issuer.test/", "ryw-api")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	tok, err := FetchToken(t.Context(), srv.Client(), srv.URL, "bob", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 600 || tok.Subject != "bob" || tok.AccessToken == "" {
		t.Errorf("token response = %+v", tok)
	}
	for _, q := range []string{"", "?sub=bob&ttl=forever", "?sub=bob&ttl=48h", "?sub=bob&ttl=-1s"} {
		resp, err := http.Post(srv.URL+TokenPath+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e["error"] != "invalid_request" {
			t.Errorf("POST /token%s = %d %v; want 400 invalid_request", q, resp.StatusCode, e)
		}
	}
	resp, err := http.Get(srv.URL + JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct{ Keys []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) != 1 || set.Keys[0]["d"] != nil || set.Keys[0]["kid"] == "" {
		t.Errorf("JWKS = %+v (%v); want one public key with a kid", set, err)
	}
}
