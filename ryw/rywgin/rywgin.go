// Package rywgin adapts ryw's HTTP middleware to Gin: the same per-request
// work (the client's token, the routing decision, the writes recorded
// before the response, the headers), as a gin.HandlerFunc.
package rywgin

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/ryw"
)

// Middleware is b.Middleware for Gin. A request the middleware refuses
// (an invalid token, a caller User cannot name) is aborted with its status
// (ryw.ErrorStatus) and the error attached (c.Error): o.OnError, if
// given, answers it; otherwise the application's error handling renders
// c.Errors (without either, the body is empty). A write that cannot be
// secured replaces the handler's response with o.OnError's (default
// ryw.WriteError).
func Middleware(b *ryw.Balancer, o ryw.HTTPOptions) gin.HandlerFunc {
	return func(c *gin.Context) {
		w, r, done, err := b.Wrap(c.Writer, c.Request, o)
		if err != nil {
			// The status at least (401, 400), whoever renders the body:
			// o.OnError, or an error middleware further out.
			// (c.AbortWithError would send the headers at once, before
			// either could.)
			status, _, _ := ryw.ErrorStatus(err)
			c.Status(status)
			_ = c.Error(err)
			c.Abort()
			if o.OnError != nil {
				o.OnError(c.Writer, c.Request, err)
			}
			return
		}
		c.Request = r
		gw := &writer{ResponseWriter: c.Writer, ryw: w}
		c.Writer = gw
		defer func() {
			// A handler that set a status and wrote nothing (c.Status(204))
			// keeps it: the headers go out with Gin's stored status. With an
			// error attached and nothing written, an error middleware further
			// out renders the response: the writes are recorded now, the
			// headers go out with it. A panic's writes are recorded too.
			if len(c.Errors) == 0 {
				gw.start()
			}
			done(false)
		}()
		c.Next()
	}
}

// writer is Gin's writer with ryw's in front: the status is kept as Gin
// keeps it until something is written, and the first write goes through
// ryw's writer, which secures the request's writes and sets the headers.
type writer struct {
	gin.ResponseWriter
	ryw *ryw.ResponseWriter
}

func (w *writer) start() {
	if !w.ryw.Started() {
		w.ryw.WriteHeader(w.ResponseWriter.Status())
	}
}

func (w *writer) WriteHeaderNow() {
	w.start()
	w.ResponseWriter.WriteHeaderNow()
}

func (w *writer) Write(b []byte) (int, error) {
	w.start()
	return w.ryw.Write(b)
}

func (w *writer) WriteString(s string) (int, error) {
	w.start()
	return w.ryw.Write([]byte(s))
}

func (w *writer) Flush() {
	w.start()
	w.ryw.Flush()
}

// Unwrap returns Gin's writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
