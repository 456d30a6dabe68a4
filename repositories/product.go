package repositories

import (
	"context"

	"gorm.io/gorm"

	"github.com/ryw-go/ryw/models"
)

// Products reads the catalog.
type Products struct {
	db *gorm.DB
}

// NewProducts returns the repository.
func NewProducts(db *gorm.DB) *Products {
	return &Products{db: db}
}

// List returns every product, in catalog order.
func (r *Products) List(ctx context.Context) ([]models.Product, error) {
	var ps []models.Product
	err := r.db.WithContext(ctx).Order("id").Find(&ps).Error
	return ps, err
}
