package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/ryw"
)

// Response headers that say where a request was served, and why.
const (
	ServedByHeader = "X-Served-By"
	ReasonHeader   = "X-Routing-Reason"
	// TokenHeader carries the causal token: the WAL position of the
	// caller's last write, set on write responses (both modes). A client may
	// send it back, in the header or the TokenCookie, as a second copy of
	// what Redis records.
	TokenHeader = "X-RYW-Token"
	TokenCookie = "ryw_token"
)

// ErrInvalidToken means X-RYW-Token (or its cookie) is not a WAL position.
var ErrInvalidToken = errors.New("invalid token")

// Access is what an endpoint does with the database, which decides where it
// may read.
type Access int

const (
	// Write: the request writes; it runs on the primary.
	Write Access = iota
	// OwnRead: the request must show the caller's own writes.
	OwnRead
	// StaleRead: the request may show slightly stale data.
	StaleRead
)

// Route asks the router where the request's queries run, stores the
// Decision in the request context for the GORM plugin, and makes the
// response carry X-Served-By (the node that really ran the request's
// queries, or "none" when no query ran) and X-Routing-Reason. OwnRead needs
// Identity before it.
func Route(router *ryw.Router, access Access, tokenTTL time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		var d ryw.Decision
		switch access {
		case Write:
			d = router.ForWrite()
		case StaleRead:
			d = router.ForStaleRead()
		case OwnRead:
			token, err := clientToken(c)
			if err != nil {
				fail(c, err)
				return
			}
			if token > 0 {
				ctx = ryw.WithClientToken(ctx, token)
			}
			user, _ := UserFrom(ctx)
			d = router.ForOwnRead(ctx, user.String())
		}
		ctx, obs := ryw.WithObservation(ryw.WithDecision(ctx, d))
		c.Request = c.Request.WithContext(ctx)
		w, ok := c.Writer.(*routedWriter)
		if !ok {
			w = &routedWriter{ResponseWriter: c.Writer}
			c.Writer = w
		}
		w.decision, w.obs, w.tokenTTL = d, obs, tokenTTL
		w.secure = c.Request.TLS != nil || c.GetHeader("X-Forwarded-Proto") == "https"
		c.Next()
	}
}

// clientToken reads the token the client sent back: the header, else the
// cookie.
func clientToken(c *gin.Context) (ryw.LSN, error) {
	raw, source := c.GetHeader(TokenHeader), TokenHeader
	if raw == "" {
		if ck, err := c.Request.Cookie(TokenCookie); err == nil {
			raw, source = ck.Value, "the "+TokenCookie+" cookie"
		}
	}
	if raw == "" {
		return 0, nil
	}
	t, err := ryw.ParseLSN(raw)
	if err != nil {
		if len(raw) > 40 {
			raw = raw[:40] + "..."
		}
		return 0, fmt.Errorf("%w: %s must be a WAL position like 0/3000148, as returned by a write, got %q", ErrInvalidToken, source, raw)
	}
	return t, nil
}

// RoutingHeaders makes every response carry the routing headers, even one
// refused before Route ran (a malformed X-Demo-UserId, say): such a
// response says X-Served-By: none, X-Routing-Reason: rejected.
func RoutingHeaders() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Writer = &routedWriter{ResponseWriter: c.Writer, decision: ryw.Decision{Reason: ReasonRejected}}
		c.Next()
	}
}

// ReasonRejected is the routing reason of a request refused before any
// routing decision was made.
const ReasonRejected ryw.Reason = "rejected"

// routedWriter adds the routing headers just before the response's headers
// are sent, when the queries have run and their node is known.
type routedWriter struct {
	gin.ResponseWriter
	decision ryw.Decision
	obs      *ryw.Observation
	tokenTTL time.Duration
	secure   bool
	done     bool
}

func (w *routedWriter) addHeaders() {
	if w.done {
		return
	}
	w.done = true
	node, reason := "", ryw.Reason("")
	if w.obs != nil {
		node, reason = w.obs.ServedBy(), w.obs.Reason()
	}
	if node == "" {
		node = "none"
	}
	if reason == "" {
		reason = w.decision.Reason
	}
	h := w.ResponseWriter.Header()
	h.Set(ServedByHeader, node)
	h.Set(ReasonHeader, string(reason))
	if w.obs == nil {
		return
	}
	if t := w.obs.Token(); t > 0 {
		h.Set(TokenHeader, t.String())
		ck := &http.Cookie{
			Name: TokenCookie, Value: t.String(), Path: "/", MaxAge: int(w.tokenTTL.Seconds()),
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: w.secure,
		}
		h.Add("Set-Cookie", ck.String())
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
