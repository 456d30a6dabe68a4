package ryw

import (
	"sync"
)

// Counters counts routing decisions by reason and by node, for metrics.
type Counters struct {
	mu       sync.Mutex
	byReason map[Reason]uint64
	byNode   map[string]uint64
}

func newCounters() Counters {
	return Counters{byReason: map[Reason]uint64{}, byNode: map[string]uint64{}}
}

func (c *Counters) add(d Decision) {
	c.mu.Lock()
	c.byReason[d.Reason]++
	c.byNode[d.Node]++
	c.mu.Unlock()
}

// CountsSnapshot is a copy of the counters at one moment.
type CountsSnapshot struct {
	ByReason map[Reason]uint64 `json:"byReason"`
	ByNode   map[string]uint64 `json:"byNode"`
}

func (c *Counters) snapshot() CountsSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CountsSnapshot{ByReason: make(map[Reason]uint64, len(c.byReason)), ByNode: make(map[string]uint64, len(c.byNode))}
	for k, v := range c.byReason {
		s.ByReason[k] = v
	}
	for k, v := range c.byNode {
		s.ByNode[k] = v
	}
	return s
}
