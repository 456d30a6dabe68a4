package ryw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Session is what a client carries from one response to its next request,
// in the signed causal token: its last write, for read-your-writes, and the
// highest position any data it was shown may reflect, for monotonic reads.
type Session struct {
	// Write is the position of the client's last write (zero: none known).
	Write Position
	// Seen is an upper bound of what the client's reads have shown: a read
	// served at or past it never goes back in time for this client (zero:
	// none yet).
	Seen Position
}

// IsZero reports whether the session holds nothing.
func (s Session) IsZero() bool { return s.Write.IsZero() && s.Seen.IsZero() }

// TokenSigner signs the causal tokens the service hands to clients, so that
// a client can send back only positions the service gave it, for the user
// it gave them to: a forged or borrowed token is ignored instead of pinning
// reads to the primary or making the router wait. Every instance must share
// the key.
//
// A token reads "s1.<system>.<write timeline>.<write LSN>.<seen timeline>.<seen LSN>.<signature>",
// for example "s1.7302061513459013653.2.0/3000148.2.0/30001C0.q1Xz9k3mZg2T0p8Vv1Y4Qw":
// the positions stay readable. Tokens of the earlier form "<LSN>.<signature>"
// (a write, no timeline) are still read.
type TokenSigner struct {
	key []byte
}

// NewTokenSigner returns a signer with key (32 bytes or more).
func NewTokenSigner(key []byte) *TokenSigner {
	return &TokenSigner{key: key}
}

const tokenVersion = "s1"

// Sign returns the token of s for userID ("" for a client without identity).
func (s *TokenSigner) Sign(userID string, ses Session) string {
	system := ses.Write.System
	if system == "" {
		system = ses.Seen.System
	}
	text := strings.Join([]string{tokenVersion, system,
		strconv.Itoa(ses.Write.Timeline), ses.Write.LSN.String(),
		strconv.Itoa(ses.Seen.Timeline), ses.Seen.LSN.String()}, ".")
	return text + "." + s.mac(userID, text)
}

// Verify reads a token a client sent back. err is not nil when raw is not a
// token at all: a client's mistake. ok is false when it parses but the
// signature does not hold for userID (forged, borrowed, or signed with
// another key): such a token is to be ignored.
func (s *TokenSigner) Verify(userID, raw string) (ses Session, ok bool, err error) {
	text, sig := raw, ""
	if i := strings.LastIndexByte(raw, '.'); i >= 0 {
		text, sig = raw[:i], raw[i+1:]
	}
	if ses, err = parseSession(text); err != nil {
		return Session{}, false, err
	}
	if sig == "" || !hmac.Equal([]byte(sig), []byte(s.mac(userID, text))) {
		return ses, false, nil
	}
	return ses, true, nil
}

func parseSession(text string) (Session, error) {
	f := strings.Split(text, ".")
	if len(f) == 1 {
		// The earlier form: a write's LSN.
		lsn, err := ParseLSN(f[0])
		return Session{Write: Position{LSN: lsn}}, err
	}
	if len(f) != 6 || f[0] != tokenVersion {
		return Session{}, fmt.Errorf("want %s.<system>.<timeline>.<LSN>.<timeline>.<LSN>", tokenVersion)
	}
	if f[1] != "" {
		if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
			return Session{}, fmt.Errorf("bad system identifier %q", f[1])
		}
	}
	var ses Session
	for i, p := range []*Position{&ses.Write, &ses.Seen} {
		tli, err := strconv.Atoi(f[2+2*i])
		if err != nil || tli < 0 || tli > 1<<31-1 {
			return Session{}, fmt.Errorf("bad timeline %q", f[2+2*i])
		}
		lsn, err := ParseLSN(f[3+2*i])
		if err != nil {
			return Session{}, err
		}
		if lsn != 0 {
			*p = Position{System: f[1], Timeline: tli, LSN: lsn}
		}
	}
	return ses, nil
}

// mac is the first 16 bytes of HMAC-SHA256(key, user id, text), in
// unpadded base64url.
func (s *TokenSigner) mac(userID, text string) string {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(userID))
	h.Write([]byte{0})
	h.Write([]byte(text))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// Why a client token was ignored.
const (
	TokenBadSignature = "signature" // forged, borrowed, or signed with another key
	TokenAhead        = "ahead"     // above any position the primary has reached
	TokenForeign      = "foreign"   // of another cluster
)
