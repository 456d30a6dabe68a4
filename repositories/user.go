package repositories

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/ryw-go/ryw/models"
	"github.com/ryw-go/ryw/ryw"
)

// Users reads and writes user profiles.
type Users struct {
	db    *gorm.DB
	reads *ryw.Router
}

// NewUsers returns the repository.
func NewUsers(db *gorm.DB, reads *ryw.Router) *Users {
	return &Users{db: db, reads: reads}
}

// Get returns the user's profile, from the node the context's decision names.
func (r *Users) Get(ctx context.Context, id uuid.UUID) (models.User, error) {
	var u models.User
	err := r.reads.Read(ctx, func(ctx context.Context) error {
		// The id as its bytes: pgx encodes a [16]byte as a uuid directly,
		// where uuid.UUID (a driver.Valuer) goes through its text form and a
		// failed binary plan first (5% of a read's CPU in the profile).
		return r.db.WithContext(ctx).Take(&u, "id = ?", [16]byte(id)).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return models.User{}, ErrNotFound
	}
	return u, err
}

// Upsert creates the profile or replaces its fields, on the primary, in one
// statement, and returns the row as stored.
func (r *Users) Upsert(ctx context.Context, u models.User) (models.User, error) {
	var saved models.User
	err := r.reads.Primary(ctx, func(ctx context.Context) error {
		return ryw.OnPrimary(r.db.WithContext(ctx)).Raw(`
		INSERT INTO users (id, email, name, avatar_url) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE
		SET email = EXCLUDED.email, name = EXCLUDED.name, avatar_url = EXCLUDED.avatar_url, updated_at = now()
		RETURNING id, email, name, avatar_url, created_at, updated_at`,
			u.ID, u.Email, u.Name, u.AvatarURL).Scan(&saved).Error
	})
	if ryw.MayHaveCommitted(err) {
		return models.User{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return saved, err
}
