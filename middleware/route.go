package middleware

import (
	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/ryw"
)

// Response headers that say where a request was served, and why.
const (
	ServedByHeader = "X-Served-By"
	ReasonHeader   = "X-Routing-Reason"
)

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
func Route(router *ryw.Router, access Access) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		var d ryw.Decision
		switch access {
		case Write:
			d = router.ForWrite()
		case StaleRead:
			d = router.ForStaleRead()
		case OwnRead:
			user, _ := UserFrom(ctx)
			d = router.ForOwnRead(ctx, user.String())
		}
		ctx, obs := ryw.WithObservation(ryw.WithDecision(ctx, d))
		c.Request = c.Request.WithContext(ctx)
		if w, ok := c.Writer.(*routedWriter); ok {
			w.decision, w.obs = d, obs
		} else {
			c.Writer = &routedWriter{ResponseWriter: c.Writer, decision: d, obs: obs}
		}
		c.Next()
	}
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
