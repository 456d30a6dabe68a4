package ryw

import "database/sql"

// ReplicaPool is the balancer's application pool for the replica name
// (nil if none), for tests that fill it.
func ReplicaPool(b *Balancer, name string) *sql.DB { return b.replica(name) }

// PrimaryPool is the balancer's application pool for the primary.
func PrimaryPool(b *Balancer) *sql.DB { return b.primary }
