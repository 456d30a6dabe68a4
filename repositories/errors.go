// Package repositories holds the GORM repositories. Every call runs with
// the caller's context (db.WithContext), which carries the request's
// routing decision: the read-your-writes middleware put it there, and the
// handle from ryw.Balancer.GORM applies it.
package repositories

import "errors"

// ErrNotFound means the row asked for does not exist (on the node that
// served the read).
var ErrNotFound = errors.New("not found")
