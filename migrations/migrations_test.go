package migrations_test

import (
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/migrations"
	"github.com/ryw-go/ryw/models"
)

var stack *devstack.Stack

func TestMain(m *testing.M) {
	os.Exit(devstack.RunTests(m, devstack.Options{}, &stack))
}

// freshDB creates an empty database for one test.
func freshDB(t *testing.T, name string) *sql.DB {
	t.Helper()
	name = fmt.Sprintf("%s_%d", name, dbSeq.Add(1))
	if err := stack.Primary.Exec(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", stack.Primary.Port, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var dbSeq atomic.Int64

var quiet = slog.New(slog.DiscardHandler)

func TestUpIsIdempotent(t *testing.T) {
	ctx := t.Context()
	db := freshDB(t, "idempotent")
	n, err := migrations.Up(ctx, db, quiet)
	if err != nil || n != 4 {
		t.Fatalf("first Up = %d, %v; want 4 migrations applied", n, err)
	}
	n, err = migrations.Up(ctx, db, quiet)
	if err != nil || n != 0 {
		t.Fatalf("second Up = %d, %v; want nothing to apply", n, err)
	}
	v, err := migrations.Version(ctx, db)
	if err != nil || v != 4 {
		t.Errorf("Version = %d, %v; want 4", v, err)
	}
	var skus []string
	rows, err := db.QueryContext(ctx, "SELECT sku FROM products ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		skus = append(skus, s)
	}
	if fmt.Sprint(skus) != "[KB-001 MS-002 MN-003]" {
		t.Errorf("seed products = %v", skus)
	}
}

func TestConcurrentUpAppliesOnce(t *testing.T) {
	ctx := t.Context()
	db := freshDB(t, "concurrent")
	const instances = 3
	applied := make([]int, instances)
	errs := make([]error, instances)
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() { applied[i], errs[i] = migrations.Up(ctx, db, quiet) })
	}
	wg.Wait()
	total := 0
	for i := range instances {
		if errs[i] != nil {
			t.Errorf("instance %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != 4 {
		t.Errorf("instances applied %v migrations in all, want 4 in total (each exactly once)", applied)
	}
	var products int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM products").Scan(&products); err != nil {
		t.Fatal(err)
	}
	if products != 3 {
		t.Errorf("%d products, want 3", products)
	}
}

func TestSchemaRejectsBadRows(t *testing.T) {
	ctx := t.Context()
	db := freshDB(t, "constraints")
	if _, err := migrations.Up(ctx, db, quiet); err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"INSERT INTO users (id, email, name) VALUES ('00000000-0000-0000-0000-000000000001', 'a@b.c', '')",
		"INSERT INTO users (id, email, name) VALUES ('00000000-0000-0000-0000-000000000001', repeat('a', 255), 'n')",
		"INSERT INTO products (sku, name, price_cents) VALUES ('KB-001', 'dup', 1)",
		"INSERT INTO products (sku, name, price_cents) VALUES ('X', 'negative', -1)",
	}
	for _, q := range bad {
		if _, err := db.ExecContext(ctx, q); err == nil {
			t.Errorf("schema accepted: %s", q)
		}
	}
}

// TestModelsMatchTheSchema reads and writes through GORM with the models, so
// a column renamed in a migration but not in a model fails here.
func TestModelsMatchTheSchema(t *testing.T) {
	ctx := t.Context()
	sqlDB := freshDB(t, "models")
	if _, err := migrations.Up(ctx, sqlDB, quiet); err != nil {
		t.Fatal(err)
	}
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var products []models.Product
	if err := db.WithContext(ctx).Order("id").Find(&products).Error; err != nil {
		t.Fatal(err)
	}
	if len(products) != 3 || products[0].SKU != "KB-001" || products[0].PriceCents != 8999 || products[0].Currency != "USD" || products[0].ID == 0 {
		t.Errorf("products = %+v", products)
	}
	u := models.User{ID: uuid.New(), Email: "ada@example.com", Name: "Ada", AvatarURL: "https://example.com/ada.png"}
	if err := db.WithContext(ctx).Create(&u).Error; err != nil {
		t.Fatal(err)
	}
	var got models.User
	if err := db.WithContext(ctx).First(&got, "id = ?", u.ID).Error; err != nil {
		t.Fatal(err)
	}
	if got.Email != u.Email || got.Name != u.Name || got.AvatarURL != u.AvatarURL || got.CreatedAt.IsZero() {
		t.Errorf("read back %+v, want %+v", got, u)
	}
}
