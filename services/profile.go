package services

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/models"
	"github.com/ryw-go/ryw/repositories"
)

// ErrProfileNotFound means the user has no profile yet.
var ErrProfileNotFound = errors.New("profile not found")

// ValidationError says which field of the input is wrong and why.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Message }

// Limits of a profile's fields.
const (
	MaxEmailLen     = 254
	MaxNameLen      = 200
	MaxAvatarURLLen = 2048
)

// UserStore is what Profiles needs from the user repository.
type UserStore interface {
	Get(ctx context.Context, id uuid.UUID) (models.User, error)
	Upsert(ctx context.Context, u models.User) (models.User, error)
}

// Profiles is the profile use case: a user reads and saves their own profile.
type Profiles struct {
	users UserStore
}

// NewProfiles builds the service.
func NewProfiles(users UserStore) *Profiles {
	return &Profiles{users: users}
}

// ProfileInput is what a user may set.
type ProfileInput struct {
	Email     string
	Name      string
	AvatarURL string // "" (or null in the request) for none
}

// Get returns the user's profile.
func (p *Profiles) Get(ctx context.Context, userID uuid.UUID) (models.User, error) {
	u, err := p.users.Get(ctx, userID)
	if errors.Is(err, repositories.ErrNotFound) {
		return models.User{}, ErrProfileNotFound
	}
	return u, err
}

// Save validates the input, then creates or replaces the user's profile on
// the primary. The read-your-writes middleware records the write before
// the response goes out, so that the user's next read shows it.
func (p *Profiles) Save(ctx context.Context, userID uuid.UUID, in ProfileInput) (models.User, error) {
	if err := in.validate(); err != nil {
		return models.User{}, err
	}
	var avatar *string // none: NULL, as the seed stores it
	if in.AvatarURL != "" {
		avatar = &in.AvatarURL
	}
	saved, err := p.users.Upsert(ctx, models.User{ID: userID, Email: in.Email, Name: in.Name, AvatarURL: avatar})
	if err != nil {
		return models.User{}, fmt.Errorf("save profile: %w", err)
	}
	return saved, nil
}

func (in ProfileInput) validate() error {
	for _, f := range []struct{ name, value string }{{"email", in.Email}, {"name", in.Name}, {"avatarUrl", in.AvatarURL}} {
		if strings.ContainsRune(f.value, 0) {
			// PostgreSQL text cannot hold NUL: refuse it here, not as a 500.
			return &ValidationError{f.name, f.name + " must not contain NUL characters"}
		}
	}
	switch n := utf8.RuneCountInString(in.Email); {
	case strings.TrimSpace(in.Email) == "":
		return &ValidationError{"email", "email is required"}
	case n > MaxEmailLen:
		return &ValidationError{"email", fmt.Sprintf("email must be at most %d characters, got %d", MaxEmailLen, n)}
	case !validEmail(in.Email):
		return &ValidationError{"email", "email must be a valid address, like ada@example.com"}
	}
	switch n := utf8.RuneCountInString(in.Name); {
	case strings.TrimSpace(in.Name) == "":
		return &ValidationError{"name", "name is required"}
	case n > MaxNameLen:
		return &ValidationError{"name", fmt.Sprintf("name must be at most %d characters, got %d", MaxNameLen, n)}
	}
	if in.AvatarURL != "" {
		if n := utf8.RuneCountInString(in.AvatarURL); n > MaxAvatarURLLen {
			return &ValidationError{"avatarUrl", fmt.Sprintf("avatarUrl must be at most %d characters, got %d", MaxAvatarURLLen, n)}
		}
		u, err := url.Parse(in.AvatarURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &ValidationError{"avatarUrl", "avatarUrl must be an http:// or https:// URL"}
		}
	}
	return nil
}

// validEmail accepts a bare address (no display name, no angle brackets)
// with a domain.
func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-1
}
