package ryw

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead log position (pg_lsn). Positions only grow,
// so "replica has replayed the user's write" is replay LSN >= write LSN.
type LSN uint64

// ParseLSN parses PostgreSQL's text form of a WAL position, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q: want two hex numbers of up to 8 digits, like 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String formats the position the way PostgreSQL does.
func (l LSN) String() string {
	var b [17]byte
	return string(l.appendText(b[:0]))
}

// appendText appends the position as String writes it ("%X/%X").
func (l LSN) appendText(b []byte) []byte {
	b = appendHexUpper(b, uint64(l)>>32)
	b = append(b, '/')
	return appendHexUpper(b, uint64(l)&0xFFFFFFFF)
}

func appendHexUpper(b []byte, v uint64) []byte {
	const digits = "0123456789ABCDEF"
	var t [16]byte
	i := len(t)
	for {
		i--
		t[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, t[i:]...)
}

// MarshalText writes the position in PostgreSQL's form, for JSON and logs.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses PostgreSQL's form.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
