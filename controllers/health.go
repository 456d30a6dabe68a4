package controllers

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/services"
)

// HealthChecker is what the health endpoints need from services.Health.
type HealthChecker interface {
	Check(ctx context.Context) services.Readiness
}

// HealthController serves liveness and readiness.
type HealthController struct {
	health HealthChecker
}

// NewHealthController builds the controller.
func NewHealthController(h HealthChecker) *HealthController {
	return &HealthController{health: h}
}

// Liveness is the /healthz body.
type Liveness struct {
	Status string `json:"status" example:"ok"`
}

// Healthz godoc
//
//	@Summary		Liveness
//	@Description	Answers 200 while the process serves HTTP. It checks no dependency: use /readyz for that.
//	@Tags			health
//	@Produce		json
//	@Success		200	{object}	Liveness
//	@Router			/healthz [get]
func (h *HealthController) Healthz(c *gin.Context) {
	c.JSON(http.StatusOK, Liveness{Status: "ok"})
}

// Readyz godoc
//
//	@Summary		Readiness
//	@Description	Probes the primary, each replica and Redis. 200 while the primary answers (status "ready", or "degraded" when a replica or Redis does not); 503 with status "unavailable" when the primary does not. "warnings" lists what weakens the guarantees without making the service unready, such as timeline_history_unreadable (the database role may not run pg_read_file(text)); they appear either way, their error texts only with READYZ_DETAILS=true, like every error text, WAL position and routing counter (the figures are on /metrics).
//	@Tags			health
//	@Produce		json
//	@Success		200	{object}	services.Readiness
//	@Failure		503	{object}	services.Readiness
//	@Router			/readyz [get]
func (h *HealthController) Readyz(c *gin.Context) {
	r := h.health.Check(c.Request.Context())
	status := http.StatusOK
	if r.Status == services.StatusUnavailable {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, r)
}
