package ryw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

// Session is what a client carries from one response to its next request,
// in the signed causal token: its last write, for read-your-writes, and the
// highest position any data it was shown may reflect, for monotonic reads.
type Session struct {
	// Write is the position of the client's last write (zero: none known).
	Write Position
	// Seen is an upper bound of what the client's reads have shown, except
	// those Pin served: a read served at or past it never goes back in time
	// for this client (zero: none yet).
	Seen Position
	// Pin is the replica run that served the client's reads since Seen was
	// last raised (zero: none). While that run lives, it may serve the
	// client's next reads without any position: a running replica's
	// visible state only moves forward (see docs/SESSIONS.md).
	Pin Incarnation
}

// IsZero reports whether the session holds nothing.
func (s Session) IsZero() bool { return s.Write.IsZero() && s.Seen.IsZero() && s.Pin == 0 }

// Incarnation identifies one run of one replica server: its postmaster's
// start time and its startup (recovery) process, hashed. It changes when
// the server restarts, and when it reinitialises after a crash of one of
// its processes, which is when a replica may come back showing less than
// it showed before.
type Incarnation uint64

// String returns the incarnation in hexadecimal, as tokens carry it.
func (i Incarnation) String() string {
	if i == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(i), 16)
}

// TokenSigner signs the causal tokens the service hands to clients, so that
// a client can send back only positions the service gave it, for the user
// it gave them to: a forged or borrowed token is ignored instead of pinning
// reads to the primary or making the router wait. Every instance must share
// the key.
//
// A token reads "s2.<system>.<write timeline>.<write LSN>.<seen timeline>.<seen LSN>.<pin>.<signature>",
// for example "s2.7302061513459013653.2.0/3000148.2.0/30001C0.9f3c2a1b44d0e7aa.q1Xz9k3mZg2T0p8Vv1Y4Qw":
// the positions stay readable; the pin is empty when there is none. Tokens
// of the earlier forms "s1.<system>.<write timeline>.<write LSN>.<seen timeline>.<seen LSN>.<signature>"
// (no pin) and "<LSN>.<signature>" (a write, no timeline) are still read.
type TokenSigner struct {
	key []byte
	// macs keeps keyed HMACs to reuse: keying one costs two hash blocks,
	// as much as signing a token.
	macs sync.Pool
}

// NewTokenSigner returns a signer with key (32 bytes or more).
func NewTokenSigner(key []byte) *TokenSigner {
	s := &TokenSigner{key: key}
	s.macs.New = func() any { return hmac.New(sha256.New, s.key) }
	return s
}

const (
	tokenVersion   = "s2"
	tokenVersionS1 = "s1"
)

// Sign returns the token of s for userID ("" for a client without identity).
func (s *TokenSigner) Sign(userID string, ses Session) string {
	system := ses.Write.System
	if system == "" {
		system = ses.Seen.System
	}
	b := make([]byte, 0, 96)
	b = append(b, tokenVersion...)
	b = append(append(b, '.'), system...)
	b = strconv.AppendInt(append(b, '.'), int64(ses.Write.Timeline), 10)
	b = ses.Write.LSN.appendText(append(b, '.'))
	b = strconv.AppendInt(append(b, '.'), int64(ses.Seen.Timeline), 10)
	b = ses.Seen.LSN.appendText(append(b, '.'))
	b = append(b, '.')
	if ses.Pin != 0 {
		b = strconv.AppendUint(b, uint64(ses.Pin), 16)
	}
	text := len(b)
	b = append(b, '.')
	b = s.appendMAC(b, userID, b[:text])
	return string(b)
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
	switch {
	case len(f) == 7 && f[0] == tokenVersion:
	case len(f) == 6 && f[0] == tokenVersionS1:
	default:
		return Session{}, fmt.Errorf("want %s.<system>.<timeline>.<LSN>.<timeline>.<LSN>.<pin>", tokenVersion)
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
	if len(f) == 7 && f[6] != "" {
		pin, err := strconv.ParseUint(f[6], 16, 64)
		if err != nil || pin == 0 || len(f[6]) > 16 {
			return Session{}, fmt.Errorf("bad pin %q", f[6])
		}
		ses.Pin = Incarnation(pin)
	}
	return ses, nil
}

// mac is the first 16 bytes of HMAC-SHA256(key, user id, text), in
// unpadded base64url.
func (s *TokenSigner) mac(userID, text string) string {
	return string(s.appendMAC(nil, userID, []byte(text)))
}

func (s *TokenSigner) appendMAC(b []byte, userID string, text []byte) []byte {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(userID))
	h.Write([]byte{0})
	h.Write(text)
	var sum [sha256.Size]byte
	out := h.Sum(sum[:0])
	s.macs.Put(h)
	return base64.RawURLEncoding.AppendEncode(b, out[:16])
}

// Why a client token was ignored.
const (
	TokenBadSignature = "signature" // forged, borrowed, or signed with another key
	TokenAhead        = "ahead"     // above any position the primary has reached
	TokenForeign      = "foreign"   // of another cluster
)
