package repositories

import (
	"context"

	"gorm.io/gorm"

	"github.com/ryw-go/ryw/models"
	"github.com/ryw-go/ryw/ryw"
)

// Products reads the catalog.
type Products struct {
	db    *gorm.DB
	reads *ryw.Router
}

// NewProducts returns the repository.
func NewProducts(db *gorm.DB, reads *ryw.Router) *Products {
	return &Products{db: db, reads: reads}
}

// List returns every product, in catalog order.
func (r *Products) List(ctx context.Context) ([]models.Product, error) {
	var ps []models.Product
	err := r.reads.Read(ctx, func(ctx context.Context) error {
		ps = ps[:0]
		return r.db.WithContext(ctx).Order("id").Find(&ps).Error
	})
	return ps, err
}
