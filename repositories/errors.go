// Package repositories holds the GORM repositories. Every call runs with
// the caller's context (db.WithContext), which carries the request's
// routing decision; reads go through the read-your-writes router so that a
// read that fails on a replica is retried on the primary.
package repositories

import (
	"errors"
	"fmt"

	"github.com/ryw-go/ryw/ryw"
)

// ErrNotFound means the row asked for does not exist (on the node that
// served the read).
var ErrNotFound = errors.New("not found")

// ErrOutcomeUnknown means a write failed in a way that leaves it unknown
// whether it committed (its deadline passed, or its connection broke, after
// it was sent). It wraps ryw.ErrUnconfirmed, so that the client is told
// exactly that.
var ErrOutcomeUnknown = fmt.Errorf("the primary did not confirm the write: %w", ryw.ErrUnconfirmed)
