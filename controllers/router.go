// Package controllers holds the Gin handlers: they bind requests, call the
// services with the request's context, and map results and errors to HTTP.
package controllers

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	swaggerfiles "github.com/swaggo/files"
	ginswagger "github.com/swaggo/gin-swagger"

	"github.com/ryw-go/ryw/middleware"
	"github.com/ryw-go/ryw/ryw"
	"github.com/ryw-go/ryw/ryw/rywgin"
)

// Deps is what the router needs.
type Deps struct {
	// Metrics is served at /metrics, and request durations are recorded in
	// it.
	Metrics *prometheus.Registry
	Logger  *slog.Logger
	// Identity says who the caller is (AUTH_MODE) and lets anonymous
	// callers through where the mode allows; Required insists on a user.
	Identity, Required gin.HandlerFunc
	// ModeOverride honours X-RYW-Mode: off (AUTH_MODE=demo only).
	ModeOverride bool
	// MaxInFlight bounds the API requests in progress at once; the others
	// wait their turn, up to QueueWait (see middleware.Admission).
	MaxInFlight int
	QueueWait   time.Duration
	// RYW routes each request's queries (read-your-writes).
	RYW      *ryw.Balancer
	UI       *UIController // nil: no live page
	Health   *HealthController
	Me       *MeController
	Products *ProductsController
}

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 64 << 10

// NewRouter builds the HTTP handler: request ids and access logs outermost,
// then error rendering and panic recovery, then the routes.
func NewRouter(d Deps) *gin.Engine {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// The access log wraps the error renderer, so that it records the
	// status the client really got; request ids come first, for both.
	r.Use(middleware.RequestID(), middleware.AccessLog(d.Logger), middleware.RequestMetrics(d.Metrics),
		Errors(d.Logger), gin.CustomRecoveryWithWriter(nil, recovered))
	r.NoRoute(noRoute)
	r.NoMethod(noMethod)

	r.GET("/healthz", d.Health.Healthz)
	r.GET("/readyz", d.Health.Readyz)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(d.Metrics, promhttp.HandlerOpts{})))
	// Swagger UI lives at /swagger/index.html; /swagger and /swagger/ lead
	// there (gin-swagger itself answers 404 for both).
	swaggerUI := ginswagger.WrapHandler(swaggerfiles.Handler)
	toIndex := func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/swagger/index.html") }
	r.GET("/swagger", toIndex)
	r.GET("/swagger/*any", func(c *gin.Context) {
		if c.Param("any") == "/" {
			toIndex(c)
			return
		}
		swaggerUI(c)
	})

	if d.UI != nil { // LIVE_PAGE
		r.GET("/", d.UI.Page)
		r.GET("/ui/state", d.UI.State)
		r.GET("/ui/static/*file", d.UI.Files)
	}

	// Only the API waits its turn: health checks and metrics answer
	// whatever the load.
	api := r.Group("/api", middleware.Admission(d.MaxInFlight, d.QueueWait, d.Metrics), middleware.RoutingHeaders())
	ownRead := func(r *http.Request) ryw.Access {
		if middleware.ModeOff(r) {
			return ryw.UncheckedRead
		}
		return ryw.OwnRead
	}
	api.GET("/me", d.Required, middleware.ModeOverride(d.ModeOverride), route(d.RYW, ownRead), d.Me.Get)
	api.POST("/me/profile", d.Required, route(d.RYW, ryw.Always(ryw.Write)),
		middleware.LimitBody(MaxBodyBytes), middleware.RequireJSON(), d.Me.SaveProfile)
	// The catalog is public: in jwt mode a caller without a token reads
	// it too (a token that is sent is still checked).
	api.GET("/products", d.Identity, route(d.RYW, ryw.Always(ryw.StaleRead)), d.Products.List)
	return r
}

// route is the read-your-writes middleware for an endpoint whose access
// is access: the caller is who the identity middleware before it named.
func route(b *ryw.Balancer, access func(*http.Request) ryw.Access) gin.HandlerFunc {
	return rywgin.Middleware(b, ryw.HTTPOptions{User: caller, Access: access})
}

// caller names the user for read-your-writes; an anonymous caller (the
// catalog's) is the nil UUID, whose tokens are signed for it like any
// other's.
func caller(r *http.Request) (string, error) {
	user, _ := middleware.UserFrom(r.Context())
	return user.String(), nil
}
