package middleware

import (
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"
)

// AccessLog logs one line per request, once the response is complete: the
// final status and size, the duration, the request id and the headers that
// say which node served it. It must wrap the error renderer, or it would log
// a refused request before its status is set.
func AccessLog(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		status := c.Writer.Status()
		level := slog.LevelInfo
		if c.Request.URL.Path == "/healthz" {
			level = slog.LevelDebug // probed every few seconds
		}
		if status >= 500 {
			level = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", status),
			slog.Int("bytes", max(c.Writer.Size(), 0)),
			slog.Duration("duration", time.Since(start)),
			slog.String("requestId", RequestIDFrom(c.Request.Context())),
		}
		if v := c.Writer.Header().Get("X-Served-By"); v != "" {
			attrs = append(attrs, slog.String("servedBy", v))
		}
		if v := c.Writer.Header().Get("X-Routing-Reason"); v != "" {
			attrs = append(attrs, slog.String("reason", v))
		}
		// The handler directly, not logger.LogAttrs: the record needs no
		// caller's program counter (runtime.Callers, 0.7% of a request).
		ctx := c.Request.Context()
		if h := logger.Handler(); h.Enabled(ctx, level) {
			r := slog.NewRecord(time.Now(), level, "request", 0)
			r.AddAttrs(attrs...)
			_ = h.Handle(ctx, r)
		}
	}
}
