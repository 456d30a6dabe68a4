// Package controllers holds the Gin handlers: they bind requests, call the
// services with the request's context, and map results and errors to HTTP.
package controllers

import (
	"log/slog"

	"github.com/gin-gonic/gin"
	swaggerfiles "github.com/swaggo/files"
	ginswagger "github.com/swaggo/gin-swagger"

	"github.com/ryw-go/ryw/middleware"
)

// Deps is what the router needs.
type Deps struct {
	Logger *slog.Logger
	Health *HealthController
}

// NewRouter builds the HTTP handler: error rendering outermost, then panic
// recovery, request ids and access logs, then the routes.
func NewRouter(d Deps) *gin.Engine {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(Errors(d.Logger), gin.CustomRecoveryWithWriter(nil, recovered), middleware.RequestID(), middleware.AccessLog(d.Logger))
	r.NoRoute(noRoute)
	r.NoMethod(noMethod)

	r.GET("/healthz", d.Health.Healthz)
	r.GET("/readyz", d.Health.Readyz)
	r.GET("/swagger/*any", ginswagger.WrapHandler(swaggerfiles.Handler))
	return r
}
