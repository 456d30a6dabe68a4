package ryw

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Position is a WAL position of one cluster, on one timeline. An LSN alone
// is comparable only within one history: after a failover the promoted
// node's timeline forks off at its switch point, and a position the old
// primary reached past it names WAL that the new history never had.
type Position struct {
	// System is the cluster's system identifier ("" when unknown).
	System string `json:"system,omitempty"`
	// Timeline is the timeline the position was taken on (0 when unknown:
	// a token or mark from before positions carried it).
	Timeline int `json:"timeline,omitempty"`
	LSN      LSN `json:"lsn"`
	// Low, for a write's position, is at or below the start of its commit
	// record (0: unknown): the primary's position as the monitor last saw
	// it before the write was sent. A write's token (LSN) is read after
	// its commit, so other sessions' WAL can put it past a failover's
	// switch point although the commit is before it; Low past the switch
	// point means the write was lost for certain.
	Low LSN `json:"low,omitempty"`
}

// IsZero reports whether p names no position.
func (p Position) IsZero() bool { return p.LSN == 0 }

// String formats the position as "<timeline>:<lsn>", or the LSN alone when
// the timeline is unknown.
func (p Position) String() string {
	if p.Timeline == 0 {
		return p.LSN.String()
	}
	return strconv.Itoa(p.Timeline) + ":" + p.LSN.String()
}

// Later returns the later of two positions of one session: the one on the
// higher timeline, else the higher LSN. Positions of one history are
// ordered that way; a position on a timeline that forked off before the
// other's LSN is judged by Cluster.Judge before it is compared.
func Later(a, b Position) Position {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case a.Timeline != b.Timeline && a.Timeline != 0 && b.Timeline != 0:
		if a.Timeline > b.Timeline {
			return a
		}
		return b
	case a.LSN >= b.LSN:
		if a.Timeline == 0 {
			a.Timeline, a.System = b.Timeline, b.System
		}
		return a
	default:
		if b.Timeline == 0 {
			b.Timeline, b.System = a.Timeline, a.System
		}
		return b
	}
}

// Cluster is what the monitor knows of the primary's history: its system
// identifier, its timeline, and where each earlier timeline of its history
// ended (the switch points in its timeline history file).
type Cluster struct {
	System   string
	Timeline int
	// Ends maps each ancestor timeline to the LSN at which the current
	// history left it. Nil when the history could not be read (see
	// Monitor); a timeline of 1 has no ancestors, and an empty map.
	Ends map[int]LSN
}

// Known reports whether the primary has been seen at all.
func (c Cluster) Known() bool { return c.Timeline > 0 }

// Verdict is how a position taken earlier relates to the current history.
type Verdict int

const (
	// Current: the position is in the current history (its timeline, or
	// an ancestor's at or below the switch point).
	Current Verdict = iota
	// Lost: the position is on an ancestor timeline past the point where
	// the current history left it. The WAL there, and every commit in it,
	// was lost in a failover (asynchronous replication).
	Lost
	// Foreign: the position is of another cluster.
	Foreign
	// Unjudged: the position cannot be placed: its timeline is newer than
	// the one this instance knows (it has not seen the promotion yet), or
	// the timeline history could not be read.
	Unjudged
)

func (v Verdict) String() string {
	switch v {
	case Current:
		return "current"
	case Lost:
		return "lost"
	case Foreign:
		return "foreign"
	default:
		return "unjudged"
	}
}

// CertainlyLost reports whether a position Judge found Lost, with the
// switch point it returned, was lost for certain: its low bound is past
// the switch point too. Otherwise the write may have committed just before
// it (see Position.Low).
func CertainlyLost(p, switchPoint Position) bool { return p.Low > switchPoint.LSN }

// Judge places p in the current history. For Current it returns p on the
// current timeline; for Lost, the switch point, where the surviving part
// of p's history ends. A position without a timeline (from before they
// carried one) is taken as current, and so is any position while the
// primary has not been seen.
func (c Cluster) Judge(p Position) (Position, Verdict) {
	if !c.Known() || p.Timeline == 0 || p.IsZero() {
		if c.Known() {
			p.System, p.Timeline = c.System, c.Timeline
		}
		return p, Current
	}
	if p.System != "" && c.System != "" && p.System != c.System {
		return Position{}, Foreign
	}
	here := Position{System: c.System, Timeline: c.Timeline}
	switch {
	case p.Timeline == c.Timeline:
		here.LSN, here.Low = p.LSN, p.Low
		return here, Current
	case p.Timeline > c.Timeline:
		return p, Unjudged
	}
	end, ok := c.Ends[p.Timeline]
	if !ok {
		return p, Unjudged
	}
	if p.LSN <= end {
		here.LSN = p.LSN
		return here, Current
	}
	here.LSN = end
	return here, Lost
}

// parseHistory reads a timeline history file: one line per ancestor,
// "<timeline>\t<switch point>\t<reason>", comments starting with #.
func parseHistory(text string) (map[int]LSN, error) {
	ends := map[int]LSN{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history line %q: want a timeline and a switch point", line)
		}
		tli, err := strconv.Atoi(f[0])
		if err != nil || tli <= 0 {
			return nil, fmt.Errorf("timeline history line %q: bad timeline", line)
		}
		end, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history line %q: %w", line, err)
		}
		ends[tli] = end
	}
	return ends, sc.Err()
}

// markValue encodes a position for a Redis mark: the system identifier and
// the timeline and LSN as fixed-width hex, "<system>:<TTTTTTTT><LLLLLLLLLLLLLLLL>",
// so that, within one system, comparing the strings after the colon
// compares (timeline, LSN); then "~<low>" when the low bound is known.
func markValue(p Position) string {
	v := fmt.Sprintf("%s:%08X%016X", p.System, p.Timeline, uint64(p.LSN))
	if p.Low > 0 {
		v += fmt.Sprintf("~%016X", uint64(p.Low))
	}
	return v
}

// parseMarkValue reads a mark: markValue's form, or 16 hex digits (an LSN
// recorded before marks carried a timeline).
func parseMarkValue(v string) (Position, error) {
	if len(v) == 16 {
		n, err := strconv.ParseUint(v, 16, 64)
		return Position{LSN: LSN(n)}, err
	}
	sys, rest, ok := strings.Cut(v, ":")
	rest, lowHex, hasLow := strings.Cut(rest, "~")
	var low uint64
	if hasLow {
		var err error
		if low, err = strconv.ParseUint(lowHex, 16, 64); err != nil || len(lowHex) != 16 {
			return Position{}, fmt.Errorf("%q: bad low bound", v)
		}
	}
	if !ok || len(rest) != 24 {
		return Position{}, fmt.Errorf("%q is not <system>:<8 hex timeline><16 hex LSN>", v)
	}
	tli, err := strconv.ParseUint(rest[:8], 16, 32)
	if err != nil {
		return Position{}, err
	}
	lsn, err := strconv.ParseUint(rest[8:], 16, 64)
	if err != nil {
		return Position{}, err
	}
	return Position{System: sys, Timeline: int(tli), LSN: LSN(lsn), Low: LSN(low)}, nil
}
