package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Profile is a user's public profile.
type Profile struct {
	UserID      string    `gorm:"primaryKey" json:"userId"`
	DisplayName string    `gorm:"not null" json:"displayName"`
	Bio         string    `gorm:"not null;default:''" json:"bio"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// profiles is the repository: plain GORM, every call with the request's
// context, which carries where its reads go.
type profiles struct {
	db *gorm.DB
}

// save creates or replaces the user's profile.
func (s profiles) save(ctx context.Context, p *Profile) error {
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(p).Error
}

// find returns the user's profile, or errNotFound.
func (s profiles) find(ctx context.Context, userID string) (Profile, error) {
	var p Profile
	err := s.db.WithContext(ctx).Take(&p, "user_id = ?", userID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return p, errNotFound
	}
	return p, err
}

// userHeader names the caller. It is not verified: a real service reads a
// session cookie or a bearer token in userID.
const userHeader = "X-User-Id"

var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// userID names the caller: the user whose writes their reads must show.
// An error refuses the request with 401.
func userID(r *http.Request) (string, error) {
	id := r.Header.Get(userHeader)
	if !userIDPattern.MatchString(id) {
		return "", fmt.Errorf("send %s: 1 to 64 letters, digits, - or _", userHeader)
	}
	return id, nil
}

// Errors the handlers return; errorStatus maps them to a status.
var errNotFound = errors.New("no profile yet: PUT /profile creates it")

type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

const (
	maxNameRunes = 100
	maxBioRunes  = 1000
)

// handlers are the HTTP handlers: bind, call the repository with the
// request's context, answer. Errors go to c.Error, for renderErrors.
type handlers struct {
	profiles profiles
}

type profileRequest struct {
	DisplayName string `json:"displayName"`
	Bio         string `json:"bio"`
}

func (h handlers) put(c *gin.Context) {
	var in profileRequest
	if err := c.ShouldBindJSON(&in); err != nil {
		_ = c.Error(badRequest{`the body must be JSON like {"displayName": "Ada", "bio": "..."}`})
		return
	}
	if n := utf8.RuneCountInString(in.DisplayName); n == 0 || n > maxNameRunes || utf8.RuneCountInString(in.Bio) > maxBioRunes {
		_ = c.Error(badRequest{fmt.Sprintf("displayName must be 1 to %d characters, bio at most %d", maxNameRunes, maxBioRunes)})
		return
	}
	user, _ := userID(c.Request) // the middleware has checked it
	p := Profile{UserID: user, DisplayName: in.DisplayName, Bio: in.Bio}
	if err := h.profiles.save(c.Request.Context(), &p); err != nil {
		_ = c.Error(err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// mine is the caller's profile: the one they just saved.
func (h handlers) mine(c *gin.Context) {
	user, _ := userID(c.Request)
	h.get(c, user)
}

// theirs is anyone's profile, as a replica has it.
func (h handlers) theirs(c *gin.Context) {
	h.get(c, c.Param("id"))
}

func (h handlers) get(c *gin.Context, user string) {
	p, err := h.profiles.find(c.Request.Context(), user)
	if err != nil {
		_ = c.Error(err)
		return
	}
	c.JSON(http.StatusOK, p)
}
