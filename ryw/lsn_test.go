package ryw

import (
	"strings"
	"testing"
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
	tok := s.Sign("alice", 0x1_0000ABCD)
	if !strings.HasPrefix(tok, "1/ABCD.") {
		t.Errorf("token %q does not start with the readable position", tok)
	}
	if lsn, ok, err := s.Verify("alice", tok); !ok || err != nil || lsn != 0x1_0000ABCD {
		t.Errorf("Verify(own token) = %s, %v, %v", lsn, ok, err)
	}
	other := NewTokenSigner([]byte("another key, just as long as the other"))
	for name, raw := range map[string]string{
		"another user's token": tok,
		"no signature":         "FFFFFFFF/FFFFFFFF",
		"a raised position":    "FFFFFFFF/FFFFFFFF" + tok[strings.Index(tok, "."):],
		"a garbled signature":  tok + "x",
		"another key's token":  other.Sign("alice", 0x1_0000ABCD),
		"an empty signature":   "1/ABCD.",
	} {
		user := "alice"
		if name == "another user's token" {
			user = "mallory"
		}
		if _, ok, err := s.Verify(user, raw); ok || err != nil {
			t.Errorf("%s: Verify = %v, %v; want ignored, not an error", name, ok, err)
		}
	}
	for _, raw := range []string{"yesterday", "1/2/3.abc", "", ".sig"} {
		if _, _, err := s.Verify("alice", raw); err == nil {
			t.Errorf("Verify(%q) took it for a token", raw)
		}
	}
}
