package ryw

import "testing"

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
