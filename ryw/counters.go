package ryw

import (
	"maps"
	"sync"
)

// Counters counts routing decisions by reason and by node, for metrics.
type Counters struct {
	mu       sync.Mutex
	byReason map[Reason]uint64
	byNode   map[string]uint64
	byBoth   map[Reason]map[string]uint64
	retries  map[Reason]uint64
	ignored  map[string]uint64
}

func newCounters() Counters {
	return Counters{byReason: map[Reason]uint64{}, byNode: map[string]uint64{}, byBoth: map[Reason]map[string]uint64{},
		retries: map[Reason]uint64{}, ignored: map[string]uint64{}}
}

// ignore counts a client token the router did not route on, by why.
func (c *Counters) ignore(why string) {
	c.mu.Lock()
	c.ignored[why]++
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
}

func (c *Counters) snapshot() CountsSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CountsSnapshot{ByReason: maps.Clone(c.byReason), ByNode: maps.Clone(c.byNode), Retries: maps.Clone(c.retries), IgnoredTokens: maps.Clone(c.ignored),
		Decisions: make(map[Reason]map[string]uint64, len(c.byBoth))}
	for reason, nodes := range c.byBoth {
		s.Decisions[reason] = maps.Clone(nodes)
	}
	return s
}
