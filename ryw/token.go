package ryw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// TokenSigner signs the causal tokens the service hands to clients, so that
// a client can send back only a position the service gave it, for the user
// it gave it to: a forged or borrowed token is ignored instead of pinning
// reads to the primary or making the router wait. Every instance must share
// the key.
//
// A signed token reads "<LSN>.<signature>", for example
// "0/3000148.q1Xz9k3mZg2T0p8Vv1Y4Qw": the position stays readable.
type TokenSigner struct {
	key []byte
}

// NewTokenSigner returns a signer with key (32 bytes or more).
func NewTokenSigner(key []byte) *TokenSigner {
	return &TokenSigner{key: key}
}

// Sign returns the token of a write at lsn by userID.
func (s *TokenSigner) Sign(userID string, lsn LSN) string {
	text := lsn.String()
	return text + "." + s.mac(userID, text)
}

// Verify reads a token a client sent back. err is not nil when raw is not a
// token at all (its position does not parse): a client's mistake. ok is
// false when the position parses but the signature does not hold for
// userID (forged, borrowed, or signed with another key): such a token is to
// be ignored.
func (s *TokenSigner) Verify(userID, raw string) (lsn LSN, ok bool, err error) {
	text, sig, signed := strings.Cut(raw, ".")
	if lsn, err = ParseLSN(text); err != nil {
		return 0, false, err
	}
	if !signed || !hmac.Equal([]byte(sig), []byte(s.mac(userID, text))) {
		return lsn, false, nil
	}
	return lsn, true, nil
}

// mac is the first 16 bytes of HMAC-SHA256(key, user id, position), in
// unpadded base64url.
func (s *TokenSigner) mac(userID, lsn string) string {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(userID))
	h.Write([]byte{0})
	h.Write([]byte(lsn))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// Why a client token was ignored.
const (
	TokenBadSignature = "signature" // forged, borrowed, or signed with another key
	TokenAhead        = "ahead"     // above any position the primary has reached
)
