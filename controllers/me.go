package controllers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/ryw-go/ryw/middleware"
	"github.com/ryw-go/ryw/models"
	"github.com/ryw-go/ryw/services"
)

// ProfileService is what MeController needs from services.Profiles.
type ProfileService interface {
	Get(ctx context.Context, userID uuid.UUID) (models.User, error)
	Save(ctx context.Context, userID uuid.UUID, in services.ProfileInput) (models.User, error)
}

// MeController serves the caller's own profile.
type MeController struct {
	profiles ProfileService
}

// NewMeController builds the controller.
func NewMeController(p ProfileService) *MeController {
	return &MeController{profiles: p}
}

// Profile is a user's profile as the API shows it.
type Profile struct {
	ID    uuid.UUID `json:"id" example:"11111111-1111-4111-8111-111111111111"`
	Email string    `json:"email" example:"ada@example.com"`
	Name  string    `json:"name" example:"Ada Lovelace"`
	// AvatarURL is null when the user has none.
	AvatarURL *string   `json:"avatarUrl" example:"https://example.com/ada.png" extensions:"x-nullable"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func profileOf(u models.User) Profile {
	avatar := u.AvatarURL
	if avatar != nil && *avatar == "" {
		avatar = nil // written by an instance older than migration 6
	}
	return Profile{ID: u.ID, Email: u.Email, Name: u.Name, AvatarURL: avatar, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// ProfileRequest is the body of POST /api/me/profile.
type ProfileRequest struct {
	Email     string `json:"email" example:"ada@example.com" maxLength:"254"`
	Name      string `json:"name" example:"Ada Lovelace" maxLength:"200"`
	AvatarURL string `json:"avatarUrl,omitempty" example:"https://example.com/ada.png" maxLength:"2048"`
}

// Get godoc
//
//	@Summary		The caller's profile
//	@Description	Always shows the caller's own writes: it is read from a replica only if that replica has replayed the caller's last write (and, in time mode, not within RYW_WINDOW of it), else from the primary. Sending back the X-RYW-Token of the caller's last write (header or ryw_token cookie) is optional. X-Served-By and X-Routing-Reason say where it was read and why.
//	@Tags			me
//	@Produce		json
//	@Security		DemoUser
//	@Security		BearerAuth
//	@Success		200				{object}	Profile
//	@Header			200				{string}	X-Served-By			"primary or the replica's name"
//	@Param			X-RYW-Token		header		string	false	"the session token the last response returned (optional; one not signed for the caller is ignored): a second copy of the caller's last write, and the floor of monotonic reads"
//	@Header			200				{string}	X-Routing-Reason	"recent-write, no-recent-write, lsn-caught-up, no-token, replicas-behind, replica-behind, fence-unknown, tracker-unavailable, ryw-off, no-replica, replica-failed, session-floor, write-lost, session-lost, timeline-unknown"
//	@Header			200				{string}	X-RYW-Token			"the caller's session, signed: s1.<system>.<timeline>.<last write>.<timeline>.<highest position read>.<signature>; also set as the ryw_token cookie"
//	@Failure		400				{object}	ErrorBody	"malformed X-Demo-UserId or X-RYW-Token; X-Demo-UserId sent in jwt mode"
//	@Failure		401				{object}	ErrorBody	"jwt mode: no bearer token, or an invalid one (expired, wrong issuer or audience, bad signature...)"
//	@Failure		404				{object}	ErrorBody	"the caller has no profile yet"
//	@Failure		503				{object}	ErrorBody	"the database is unavailable; or (code auth_unavailable) the token issuer's keys cannot be fetched; or (code unsettled) the primary does not show yet a change a replica already showed this client (a synchronous standby is not answering): try again"
//	@Router			/api/me [get]
func (h *MeController) Get(c *gin.Context) {
	user, _ := middleware.UserFrom(c.Request.Context())
	u, err := h.profiles.Get(c.Request.Context(), user)
	if err != nil {
		fail(c, err)
		return
	}
	c.JSON(http.StatusOK, profileOf(u))
}

// SaveProfile godoc
//
//	@Summary		Create or replace the caller's profile
//	@Description	Writes on the primary and records the write, so that the caller's next reads show it. Unknown fields, malformed JSON and invalid values are refused with 400 and nothing is written.
//	@Tags			me
//	@Accept			json
//	@Produce		json
//	@Security		DemoUser
//	@Security		BearerAuth
//	@Param			profile			body		ProfileRequest	true	"the profile"
//	@Success		200				{object}	Profile
//	@Header			200				{string}	X-Served-By			"primary"
//	@Header			200				{string}	X-Routing-Reason	"write, or write-fenced when Redis could not record it and the primary's fence secured it instead"
//	@Header			200				{string}	X-RYW-Token			"the caller's session, signed, with the write's WAL position and timeline (s1.7302061513459013653.1.0/3000148.1.0/30001C0.q1Xz9k3mZg2T0p8Vv1Y4Qw); also set as the ryw_token cookie"
//	@Failure		400				{object}	ErrorBody	"malformed JSON, an unknown field, or an invalid value (the message names the field)"
//	@Failure		401				{object}	ErrorBody	"jwt mode: no bearer token, or an invalid one"
//	@Failure		413				{object}	ErrorBody	"body over 64 KiB"
//	@Failure		415				{object}	ErrorBody	"Content-Type is not application/json"
//	@Failure		503				{object}	ErrorBody	"the primary is unavailable; or (code write_unconfirmed) the change was saved but could not be secured for read-your-writes: repeat the request"
//	@Router			/api/me/profile [post]
func (h *MeController) SaveProfile(c *gin.Context) {
	var req ProfileRequest
	if err := bindJSON(c, &req); err != nil {
		fail(c, err)
		return
	}
	user, _ := middleware.UserFrom(c.Request.Context())
	u, err := h.profiles.Save(c.Request.Context(), user, services.ProfileInput(req))
	if err != nil {
		fail(c, err)
		return
	}
	c.JSON(http.StatusOK, profileOf(u))
}
