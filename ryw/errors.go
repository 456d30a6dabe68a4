package ryw

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsUnavailable reports whether err means the node could not be reached or
// dropped the connection, as opposed to a query the node rejected: the
// node is down, restarting or unreachable.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exception; 57P01-03: admin or crash shutdown,
		// cannot connect now (starting up).
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// MayHaveCommitted reports whether a statement that failed with err may
// still have committed on the server: its deadline passed or its
// connection broke after the statement was sent. A write that fails so is
// neither known done nor known undone.
//
// A server error (a *pgconn.PgError, such as "terminating connection due to
// administrator command") means the statement did not commit.
func MayHaveCommitted(err error) bool {
	var pgErr *pgconn.PgError
	if err == nil || pgconn.SafeToRetry(err) || errors.As(err, &pgErr) {
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || IsUnavailable(err)
}

// isStatementTimeout reports whether the server cancelled the statement at
// its statement_timeout, which a replica's pool sets to the replica
// timeout: the same verdict as the client's deadline, whichever of the two
// clocks fires first.
func isStatementTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014" && strings.Contains(pgErr.Message, "statement timeout")
}

// isRecoveryConflict reports whether a replica cancelled the query because
// it conflicted with WAL replay: worth retrying elsewhere.
func isRecoveryConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40001"
}

// isSchemaBehind reports whether a query failed for want of a table,
// column, function or schema: on a replica, a sign that it replays WAL from
// before they were created (it restarted from an old restart point).
func isSchemaBehind(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "42P01", "42703", "42883", "3F000": // undefined table, column, function; invalid schema name
		return true
	}
	return false
}

// isReadOnly reports whether a statement failed because it tried to write
// on a standby.
func isReadOnly(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006"
}
