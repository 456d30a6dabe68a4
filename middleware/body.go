package middleware

import (
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/gin-gonic/gin"
)

// ErrBodyTooLarge means the request body is over the limit.
var ErrBodyTooLarge = errors.New("request body too large")

// ErrUnsupportedMediaType means the body is not JSON.
var ErrUnsupportedMediaType = errors.New("unsupported media type")

// LimitBody refuses bodies over limit bytes: at once when Content-Length
// says so, else when reading passes the limit (the handler then sees an
// *http.MaxBytesError).
func LimitBody(limit int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > limit {
			fail(c, fmt.Errorf("%w: the limit is %d bytes, got %d", ErrBodyTooLarge, limit, c.Request.ContentLength))
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		c.Next()
	}
}

// RequireJSON refuses a request whose Content-Type is not application/json.
func RequireJSON() gin.HandlerFunc {
	return func(c *gin.Context) {
		ct := c.GetHeader("Content-Type")
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			if ct == "" {
				ct = "none"
			}
			fail(c, fmt.Errorf("%w: send Content-Type: application/json, got %s", ErrUnsupportedMediaType, ct))
			return
		}
		c.Next()
	}
}
