package ryw

import (
	"maps"
	"sync"
)

// Counters counts routing decisions by reason and by node, for metrics.
type Counters struct {
	mu         sync.Mutex
	byReason   map[Reason]uint64
	byNode     map[string]uint64
	byBoth     map[Reason]map[string]uint64
	retries    map[Reason]uint64
	ignored    map[string]uint64
	lost       map[string]uint64
	sessions   map[string]uint64
	overloaded uint64
}

func newCounters() Counters {
	return Counters{byReason: map[Reason]uint64{}, byNode: map[string]uint64{}, byBoth: map[Reason]map[string]uint64{},
		retries: map[Reason]uint64{}, ignored: map[string]uint64{}, lost: map[string]uint64{}, sessions: map[string]uint64{}}
}

// lostWrite counts a write found lost in a failover, by where its position
// was found: LostInTracker (each lost mark is counted once, by the instance
// that replaced it) or LostInToken (a client's token, counted at every
// request that brings one back).
func (c *Counters) lostWrite(foundIn string, certain bool) {
	c.mu.Lock()
	c.lost[LostKey(foundIn, certain)]++
	c.mu.Unlock()
}

// LostKey is the key of CountsSnapshot.LostWrites for writes found in
// foundIn, lost for certain or possibly.
func LostKey(foundIn string, certain bool) string {
	if certain {
		return foundIn + "/certain"
	}
	return foundIn + "/possible"
}

// session counts an event of the session floor (SessionLost,
// SessionUnmeasured).
func (c *Counters) session(what string) {
	c.mu.Lock()
	c.sessions[what]++
	c.mu.Unlock()
}

// ignore counts a client token the router did not route on, by why.
func (c *Counters) ignore(why string) {
	c.mu.Lock()
	c.ignored[why]++
	c.mu.Unlock()
}

// shed counts a read failed with ErrOverloaded.
func (c *Counters) shed() {
	c.mu.Lock()
	c.overloaded++
	c.mu.Unlock()
}

// retry counts a read retried on the primary, by cause.
func (c *Counters) retry(cause Reason) {
	c.mu.Lock()
	c.retries[cause]++
	c.mu.Unlock()
}

func (c *Counters) add(d Decision) {
	c.mu.Lock()
	c.byReason[d.Reason]++
	c.byNode[d.Node]++
	if c.byBoth[d.Reason] == nil {
		c.byBoth[d.Reason] = map[string]uint64{}
	}
	c.byBoth[d.Reason][d.Node]++
	c.mu.Unlock()
}

// CountsSnapshot is a copy of the counters at one moment.
type CountsSnapshot struct {
	ByReason map[Reason]uint64 `json:"byReason"`
	ByNode   map[string]uint64 `json:"byNode"`
	// Decisions counts by reason, then node.
	Decisions map[Reason]map[string]uint64 `json:"decisions"`
	// Retries counts reads retried on the primary after a replica failed
	// them, by cause (replica-failed, replica-behind).
	Retries map[Reason]uint64 `json:"retries"`
	// IgnoredTokens counts client tokens not routed on, by why
	// (TokenBadSignature, TokenAhead).
	IgnoredTokens map[string]uint64 `json:"ignoredTokens"`
	// LostWrites counts writes found lost in a failover, by where they were
	// found (LostInTracker, LostInToken) and whether for certain (LostKey).
	LostWrites map[string]uint64 `json:"lostWrites"`
	// Sessions counts session-floor events: a client's floor lost in a
	// failover (SessionLost), a read whose position could not be measured
	// and was taken from the primary instead, or not at all
	// (SessionUnmeasured).
	Sessions map[string]uint64 `json:"sessions"`
	// Overloaded counts reads failed with ErrOverloaded: they waited for a
	// replica's pool past the replica timeout, and the retry budget had no
	// room to retry them on the primary.
	Overloaded uint64 `json:"overloaded"`
}

// Where a lost write was found, and session-floor events.
const (
	LostInTracker     = "tracker"
	LostInToken       = "token"
	SessionLost       = "floor-lost"
	SessionUnmeasured = "unmeasured"
)

func (c *Counters) snapshot() CountsSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CountsSnapshot{ByReason: maps.Clone(c.byReason), ByNode: maps.Clone(c.byNode), Retries: maps.Clone(c.retries), IgnoredTokens: maps.Clone(c.ignored),
		LostWrites: maps.Clone(c.lost), Sessions: maps.Clone(c.sessions), Overloaded: c.overloaded,
		Decisions: make(map[Reason]map[string]uint64, len(c.byBoth))}
	for reason, nodes := range c.byBoth {
		s.Decisions[reason] = maps.Clone(nodes)
	}
	return s
}
