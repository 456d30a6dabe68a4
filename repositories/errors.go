// Package repositories holds the GORM repositories. Every call runs with
// the caller's context (db.WithContext), which carries the request's
// routing decision; reads go through the read-your-writes router so that a
// read that fails on a replica is retried on the primary.
package repositories

import "errors"

// ErrNotFound means the row asked for does not exist (on the node that
// served the read).
var ErrNotFound = errors.New("not found")
