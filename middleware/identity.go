package middleware

import (
	"context"
	"errors"
	"fmt"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// UserIDHeader carries the caller's identity in demo mode.
const UserIDHeader = "X-Demo-UserId"

// DefaultDemoUser is who a request without X-Demo-UserId is.
var DefaultDemoUser = uuid.MustParse("11111111-1111-4111-8111-111111111111")

// ErrInvalidUserID means X-Demo-UserId is not a UUID.
var ErrInvalidUserID = errors.New("invalid user id")

type userKey struct{}

// Identity reads the caller's user id from X-Demo-UserId (a UUID), or uses
// defaultUser when the header is absent, and stores it in the request
// context. A malformed id is refused with ErrInvalidUserID.
func Identity(defaultUser uuid.UUID) gin.HandlerFunc {
	return func(c *gin.Context) {
		id := defaultUser
		if raw := c.Request.Header.Values(UserIDHeader); len(raw) > 0 {
			var err error
			if id, err = parseUserID(raw); err != nil {
				fail(c, err)
				return
			}
		}
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), userKey{}, id))
		c.Next()
	}
}

func parseUserID(values []string) (uuid.UUID, error) {
	if len(values) != 1 {
		return uuid.Nil, fmt.Errorf("%w: send one %s header, got %d", ErrInvalidUserID, UserIDHeader, len(values))
	}
	raw := values[0]
	// uuid.Parse also takes the urn: and braced forms; only the canonical
	// 36-character form is an identity here.
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 || id == uuid.Nil {
		if len(raw) > 64 {
			raw = raw[:64] + "..."
		}
		return uuid.Nil, fmt.Errorf("%w: %s must be a UUID like %s, got %q", ErrInvalidUserID, UserIDHeader, DefaultDemoUser, raw)
	}
	return id, nil
}

// UserFrom returns the user id Identity stored in ctx.
func UserFrom(ctx context.Context) (uuid.UUID, bool) {
	id, ok := ctx.Value(userKey{}).(uuid.UUID)
	return id, ok
}

// fail attaches err for the error renderer and stops the chain.
func fail(c *gin.Context, err error) {
	_ = c.Error(err)
	c.Abort()
}
