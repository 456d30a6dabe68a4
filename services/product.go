package services

import (
	"context"

	"github.com/ryw-go/ryw/models"
)

// ProductStore is what Catalog needs from the product repository.
type ProductStore interface {
	List(ctx context.Context) ([]models.Product, error)
}

// Catalog is the product catalog use case. Its reads may be slightly stale.
type Catalog struct {
	products ProductStore
}

// NewCatalog builds the service.
func NewCatalog(products ProductStore) *Catalog {
	return &Catalog{products: products}
}

// List returns every product.
func (c *Catalog) List(ctx context.Context) ([]models.Product, error) {
	return c.products.List(ctx)
}
