package middleware

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// RequestMetrics observes every request's duration in a histogram labelled
// by route (the registered pattern, never the raw path, so that the label
// set stays small), method and final status. Register it outside the error
// renderer, like AccessLog, so that the status is the one the client got.
func RequestMetrics(reg prometheus.Registerer) gin.HandlerFunc {
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ryw_http_request_duration_seconds",
		Help:    "HTTP requests by route, method and status: how long they took to answer.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method", "status"})
	reg.MustRegister(hist)
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		hist.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).Observe(time.Since(start).Seconds())
	}
}
