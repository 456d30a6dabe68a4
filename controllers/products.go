package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/models"
)

// CatalogService is what ProductsController needs from services.Catalog.
type CatalogService interface {
	List(ctx context.Context) ([]models.Product, error)
}

// ProductsController serves the catalog.
type ProductsController struct {
	catalog CatalogService
}

// NewProductsController builds the controller.
func NewProductsController(c CatalogService) *ProductsController {
	return &ProductsController{catalog: c}
}

// Product is a catalog entry as the API shows it.
type Product struct {
	ID          int64  `json:"id" example:"1"`
	SKU         string `json:"sku" example:"PRO-SUB"`
	Name        string `json:"name" example:"Pro Subscription"`
	Description string `json:"description" example:""`
	// Price is the seed's numeric(12,2), written as the exact decimal
	// (19.99, 99.00): a JSON number, never rounded through a float.
	Price    json.Number `json:"price" swaggertype:"number" example:"19.99"`
	Currency string      `json:"currency" example:"USD"`
}

// decimal is a numeric value as PostgreSQL prints it, and as JSON takes it.
var decimal = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?$`)

// ProductList is the body of GET /api/products.
type ProductList struct {
	Products []Product `json:"products"`
}

// List godoc
//
//	@Summary		The product catalog
//	@Description	May be slightly stale: served by a healthy replica whenever there is one. Public: no identity needed (a bearer token that is sent is still checked).
//	@Tags			products
//	@Produce		json
//	@Success		200	{object}	ProductList
//	@Header			200	{string}	X-Served-By			"a replica's name, or primary when none is healthy"
//	@Header			200	{string}	X-Routing-Reason	"stale-ok, no-replica, session-floor (no replica has what the client already read), session-lost, timeline-unknown, or fence-unknown (the primary unconfirmed: see RYW_STALE_READS_WITHOUT_PRIMARY)"
//	@Header			200	{string}	X-RYW-Token			"the caller's session, signed: send it back (or keep the ryw_token cookie) and no later read shows an older catalog"
//	@Param			X-RYW-Token	header	string	false	"the session token the last response returned (optional): the floor of monotonic reads"
//	@Failure		401	{object}	ErrorBody	"jwt mode: an invalid bearer token was sent"
//	@Failure		503	{object}	ErrorBody	"the database is unavailable; or (code unsettled) the primary does not show yet a change a replica already showed this client (a synchronous standby is not answering): try again"
//	@Router			/api/products [get]
func (h *ProductsController) List(c *gin.Context) {
	ps, err := h.catalog.List(c.Request.Context())
	if err != nil {
		fail(c, err)
		return
	}
	out := ProductList{Products: make([]Product, len(ps))}
	for i, p := range ps {
		// The schema allows only numbers, but a price that is not one
		// would make the whole body invalid JSON after a 200: refuse it.
		if !decimal.MatchString(p.Price) {
			fail(c, fmt.Errorf("product %d has the price %q, which is not a decimal number", p.ID, p.Price))
			return
		}
		out.Products[i] = Product{ID: p.ID, SKU: p.SKU, Name: p.Name, Description: p.Description, Price: json.Number(p.Price), Currency: p.Currency}
	}
	c.JSON(http.StatusOK, out)
}
