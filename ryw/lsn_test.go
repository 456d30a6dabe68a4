package ryw

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseLSN(t *testing.T) {
	valid := map[string]LSN{
		"0/0":               0,
		"0/3000148":         0x3000148,
		"16/B374D848":       0x16_B374D848,
		"FFFFFFFF/FFFFFFFF": 0xFFFFFFFF_FFFFFFFF,
		"a/b":               0xA_0000000B,
	}
	for in, want := range valid {
		got, err := ParseLSN(in)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "/1", "1/", "x/1", "1/1/1", "123456789/0", "-1/0", "+1/0", " 1/0"} {
		if got, err := ParseLSN(in); err == nil {
			t.Errorf("ParseLSN(%q) = %v, want an error", in, got)
		}
	}
}

func TestLSNStringRoundTrip(t *testing.T) {
	for _, s := range []string{"0/0", "0/3000148", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		l, err := ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		if l.String() != s {
			t.Errorf("ParseLSN(%q).String() = %q", s, l.String())
		}
	}
	// The same text as PostgreSQL's own "%X/%X", for any position.
	for _, l := range []LSN{0, 1, 0xF, 0x10, 0xABCDEF, 1 << 32, 0x1_0000ABCD, 0xFFFFFFFF, 0xDEADBEEF_0BADF00D, ^LSN(0)} {
		if want := fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF); l.String() != want {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(l), l.String(), want)
		}
	}
}

func TestRecordEnd(t *testing.T) {
	const block, segment = 8192, 16 << 20
	for _, tt := range []struct{ insert, want LSN }{
		{0x1_00002018, 0x1_00002000},      // past a page header: the page boundary
		{0x1_01000028, 0x1_01000000},      // past a segment's long header
		{0x1_00002019, 0x1_00002019},      // inside a page: unchanged
		{0x1_00002028, 0x1_00002028},      // 40 bytes into a page that starts no segment
		{0x1_00002000, 0x1_00002000},      // on a boundary
		{0x1_01000018, 0x1_01000018},      // 24 into a segment: not an insert position, left alone
		{LSN(block + 24), LSN(block)},     // the first pages
		{LSN(segment + 40), LSN(segment)}, //
		{LSN(3*segment + 8192 + 24), 3*segment + 8192},
	} {
		if got := recordEnd(tt.insert, block, segment); got != tt.want {
			t.Errorf("recordEnd(%s) = %s, want %s", tt.insert, got, tt.want)
		}
	}
}

func TestTokenSigner(t *testing.T) {
	s := NewTokenSigner([]byte("0123456789abcdef0123456789abcdef"))
	ses := Session{
		Write: Position{System: "7302061513459013653", Timeline: 2, LSN: 0x1_0000ABCD},
		Seen:  Position{System: "7302061513459013653", Timeline: 2, LSN: 0x1_0000ABFF},
		Pin:   0x9f3c2a1b44d0e7aa,
	}
	tok := s.Sign("alice", ses)
	if !strings.HasPrefix(tok, "s2.7302061513459013653.2.1/ABCD.2.1/ABFF.9f3c2a1b44d0e7aa.") {
		t.Errorf("token %q does not start with the readable positions", tok)
	}
	if got, ok, err := s.Verify("alice", tok); !ok || err != nil || got != ses {
		t.Errorf("Verify(own token) = %+v, %v, %v", got, ok, err)
	}
	// A session with only a seen position, for a client without identity.
	seenOnly := Session{Seen: ses.Seen}
	if got, ok, err := s.Verify("", s.Sign("", seenOnly)); !ok || err != nil || got != seenOnly {
		t.Errorf("Verify(seen only) = %+v, %v, %v", got, ok, err)
	}
	// A pin alone: a client whose reads were all on one replica run.
	pinOnly := Session{Pin: 1}
	if got, ok, err := s.Verify("bob", s.Sign("bob", pinOnly)); !ok || err != nil || got != pinOnly {
		t.Errorf("Verify(pin only) = %+v, %v, %v", got, ok, err)
	}
	// Signing reuses keyed HMACs: the same session signs the same, however
	// often and from however many goroutines.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if again := s.Sign("alice", ses); again != tok {
					t.Errorf("Sign again = %q, want %q", again, tok)
					return
				}
			}
		})
	}
	wg.Wait()
	// The s1 form (no pin), as earlier releases signed it, is still read.
	s1 := "s1.7302061513459013653.2.1/ABCD.2.1/ABFF"
	s1 += "." + s.mac("alice", s1)
	if got, ok, err := s.Verify("alice", s1); !ok || err != nil || got != (Session{Write: ses.Write, Seen: ses.Seen}) {
		t.Errorf("Verify(s1 token) = %+v, %v, %v", got, ok, err)
	}
	// The earlier form, a write's LSN, is still read, with no timeline.
	legacy := "1/ABCD." + s.mac("alice", "1/ABCD")
	if got, ok, err := s.Verify("alice", legacy); !ok || err != nil || got != (Session{Write: Position{LSN: 0x1_0000ABCD}}) {
		t.Errorf("Verify(legacy token) = %+v, %v, %v", got, ok, err)
	}
	other := NewTokenSigner([]byte("another key, just as long as the other"))
	sig := tok[strings.LastIndex(tok, "."):]
	for name, raw := range map[string]string{
		"another user's token":  tok,
		"no signature":          "s2.7302061513459013653.2.1/ABCD.2.1/ABFF.9f3c2a1b44d0e7aa.",
		"another pin":           "s2.7302061513459013653.2.1/ABCD.2.1/ABFF.9f3c2a1b44d0e7ab" + sig,
		"the pin dropped":       "s2.7302061513459013653.2.1/ABCD.2.1/ABFF." + sig,
		"a bare position":       "FFFFFFFF/FFFFFFFF",
		"a raised position":     "s2.7302061513459013653.2.FFFFFFFF/FFFFFFFF.2.1/ABFF.9f3c2a1b44d0e7aa" + sig,
		"a raised timeline":     "s2.7302061513459013653.3.1/ABCD.2.1/ABFF.9f3c2a1b44d0e7aa" + sig,
		"another cluster":       "s2.1.2.1/ABCD.2.1/ABFF.9f3c2a1b44d0e7aa" + sig,
		"an s1 token's fields":  "s1.7302061513459013653.2.1/ABCD.2.1/ABFF" + sig,
		"a garbled signature":   tok + "x",
		"another key's token":   other.Sign("alice", ses),
		"a raised legacy token": "FFFFFFFF/FFFFFFFF" + legacy[strings.Index(legacy, "."):],
	} {
		user := "alice"
		if name == "another user's token" {
			user = "mallory"
		}
		if _, ok, err := s.Verify(user, raw); ok || err != nil {
			t.Errorf("%s: Verify = %v, %v; want ignored, not an error", name, ok, err)
		}
	}
	for _, raw := range []string{"yesterday", "1/2/3.abc", "", ".sig", "s1.x.2.1/ABCD.2.1/ABFF.sig",
		"s1.1.-2.1/ABCD.2.1/ABFF.sig", "s2.1.2.1/ABCD.2.1/ABFF.sig", "s1.1.2.1/ABCD.2.sig",
		"s1.1.2.1/ABCD.2.1/ABFF.9f.sig", "s2.1.2.1/ABCD.2.1/ABFF.xyz.sig", "s2.1.2.1/ABCD.2.1/ABFF.0.sig",
		"s2.1.2.1/ABCD.2.1/ABFF.10000000000000000.sig", "s3.1.2.1/ABCD.2.1/ABFF.9f.sig"} {
		if _, _, err := s.Verify("alice", raw); err == nil {
			t.Errorf("Verify(%q) took it for a token", raw)
		}
	}
}

// TestTokenCookie: the token cookie reads as http.Cookie writes it, plain
// and secure, and a browser's cookie parser reads the token back whole.
func TestTokenCookie(t *testing.T) {
	b := &Balancer{}
	b.cfg.MarkerTTL = 10 * time.Minute
	tok := NewTokenSigner([]byte("0123456789abcdef0123456789abcdef")).Sign("alice",
		Session{Seen: Position{System: "7302061513459013653", Timeline: 2, LSN: 0x1_0000ABFF}, Pin: 0x9f3c2a1b44d0e7aa})
	for _, secure := range []bool{false, true} {
		want := (&http.Cookie{Name: TokenCookie, Value: tok, Path: "/", MaxAge: 600,
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secure}).String()
		for range 2 {
			if got := TokenCookie + "=" + tok + b.cookieAttrs(secure); got != want {
				t.Errorf("secure %v: cookie %q, want %q", secure, got, want)
			}
		}
		ck, err := http.ParseSetCookie(want)
		if err != nil || ck.Value != tok {
			t.Errorf("ParseSetCookie = %+v, %v; want the token %q", ck, err, tok)
		}
	}
}
