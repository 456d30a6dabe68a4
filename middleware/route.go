package middleware

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/ryw"
)

// ModeHeader asks for one read to be routed as another RYW_MODE would:
// "off" shows the stale read that read-your-writes prevents, side by side
// with the fix. Demo mode only (ModeOverride).
const ModeHeader = "X-RYW-Mode"

// ErrModeOverride means X-RYW-Mode was sent where it is not honoured, or
// with a value other than off.
var ErrModeOverride = errors.New("X-RYW-Mode refused")

type modeOffKey struct{}

// ModeOverride reads X-RYW-Mode for Route. With allowed (AUTH_MODE=demo)
// "off" makes the request's own-write read ignore read-your-writes; in jwt
// mode, or with any other value, the header is refused (400): never
// silently trusted, never silently ignored.
func ModeOverride(allowed bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		v := c.Request.Header.Values(ModeHeader)
		if len(v) == 0 {
			c.Next()
			return
		}
		switch {
		case !allowed:
			fail(c, fmt.Errorf("%w: it is honoured in AUTH_MODE=demo only, to show the stale read; this service runs AUTH_MODE=jwt", ErrModeOverride))
			return
		case len(v) != 1 || v[0] != string(ryw.ModeOff):
			fail(c, fmt.Errorf("%w: the only value is off, got %q", ErrModeOverride, v))
			return
		}
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), modeOffKey{}, true))
		c.Next()
	}
}

// ModeOff reports whether the request asked, through X-RYW-Mode: off (and
// ModeOverride let it), to be routed as RYW_MODE=off would.
func ModeOff(r *http.Request) bool {
	off, _ := r.Context().Value(modeOffKey{}).(bool)
	return off
}

// RoutingHeaders makes every response carry the routing headers, even one
// refused before Route ran (a malformed X-Demo-UserId, say): such a
// response says X-Served-By: none, X-Routing-Reason: rejected.
func RoutingHeaders() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Writer = &routedWriter{ResponseWriter: c.Writer}
		c.Next()
	}
}

// ReasonRejected is the routing reason of a request refused before any
// routing decision was made.
const ReasonRejected ryw.Reason = "rejected"

// routedWriter sets the routing headers of a request refused before the
// read-your-writes middleware ran; once it has run, its headers stand.
type routedWriter struct {
	gin.ResponseWriter
	done bool
}

func (w *routedWriter) addHeaders() {
	if w.done {
		return
	}
	w.done = true
	h := w.ResponseWriter.Header()
	if h.Get(ryw.ServedByHeader) == "" {
		h.Set(ryw.ServedByHeader, "none")
		h.Set(ryw.ReasonHeader, string(ReasonRejected))
	}
}

func (w *routedWriter) WriteHeader(code int) {
	w.addHeaders()
	w.ResponseWriter.WriteHeader(code)
}

func (w *routedWriter) WriteHeaderNow() {
	w.addHeaders()
	w.ResponseWriter.WriteHeaderNow()
}

func (w *routedWriter) Write(b []byte) (int, error) {
	w.addHeaders()
	return w.ResponseWriter.Write(b)
}

func (w *routedWriter) WriteString(s string) (int, error) {
	w.addHeaders()
	return w.ResponseWriter.WriteString(s)
}
