package middleware

import (
	"context"
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
	// TokenHeader carries the causal token (ryw.Session, signed): the WAL
	// position of the caller's last write, a second copy of what Redis
	// records, and, with the session floor on, the highest position the
	// caller's reads may have shown. Responses set it, in the header and the
	// TokenCookie; a client sends it back in either, for read-your-writes
	// without Redis and for monotonic reads.
	TokenHeader = "X-RYW-Token"
	TokenCookie = "ryw_token"
)

// ErrInvalidToken means X-RYW-Token (or its cookie) is not a WAL position.
var ErrInvalidToken = errors.New("invalid token")

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

// Tokens is how Route reads and writes the causal token.
type Tokens struct {
	Signer *ryw.TokenSigner
	TTL    time.Duration // the cookie's lifetime
}

// Route asks the router where the request's queries run, stores the
// Decision in the request context for the GORM plugin, and makes the
// response carry X-Served-By (the node that really ran the request's
// queries, or "none" when no query ran) and X-Routing-Reason, and a write's
// response its signed token. Route needs Identity before it. A token the
// client sends back that is not a token at all is refused (400); one whose
// signature does not hold for the caller is ignored, and counted.
func Route(router *ryw.Router, tokens Tokens, access Access) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		user, _ := UserFrom(ctx)
		ses, err := clientSession(c, tokens.Signer, user.String(), router)
		if err != nil {
			fail(c, err)
			return
		}
		if !ses.IsZero() {
			ctx = ryw.WithClientSession(ctx, ses)
		}
		ctx, obs := ryw.WithObservation(ctx)
		var d ryw.Decision
		switch access {
		case Write:
			d = router.ForWrite(ctx)
		case StaleRead:
			d = router.ForStaleRead(ctx)
		case OwnRead:
			if off, _ := ctx.Value(modeOffKey{}).(bool); off {
				d = router.ForOwnReadOff()
				break
			}
			d = router.ForOwnRead(ctx, user.String())
		}
		ctx = ryw.WithDecision(ctx, d)
		c.Request = c.Request.WithContext(ctx)
		w, ok := c.Writer.(*routedWriter)
		if !ok {
			w = &routedWriter{ResponseWriter: c.Writer}
			c.Writer = w
		}
		w.decision, w.obs, w.tokens, w.user, w.router, w.ctx = d, obs, tokens, user.String(), router, ctx
		w.secure = c.Request.TLS != nil || c.GetHeader("X-Forwarded-Proto") == "https"
		c.Next()
	}
}

// clientSession reads the token the client sent back (the header, else the
// cookie) and returns its session if its signature holds for user, else
// none.
func clientSession(c *gin.Context, signer *ryw.TokenSigner, user string, router *ryw.Router) (ryw.Session, error) {
	raw, source := c.GetHeader(TokenHeader), TokenHeader
	if raw == "" {
		if ck, err := c.Request.Cookie(TokenCookie); err == nil {
			raw, source = ck.Value, "the "+TokenCookie+" cookie"
		}
	}
	if raw == "" {
		return ryw.Session{}, nil
	}
	t, ok, err := signer.Verify(user, raw)
	if err != nil {
		if len(raw) > 80 {
			raw = raw[:80] + "..."
		}
		return ryw.Session{}, fmt.Errorf("%w: %s must be a token as a response returned it, like s1.7302061513459013653.1.0/3000148.1.0/30001C0.q1Xz9k3mZg2T0p8Vv1Y4Qw, got %q", ErrInvalidToken, source, raw)
	}
	if !ok {
		router.IgnoreToken(ryw.TokenBadSignature)
		return ryw.Session{}, nil
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
	tokens   Tokens
	user     string
	router   *ryw.Router
	ctx      context.Context
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
	if s := w.router.SessionAfter(w.ctx, w.obs); !s.IsZero() {
		signed := w.tokens.Signer.Sign(w.user, s)
		h.Set(TokenHeader, signed)
		ck := &http.Cookie{
			Name: TokenCookie, Value: signed, Path: "/", MaxAge: int(w.tokens.TTL.Seconds()),
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
