package migrations_test

import (
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strings"
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
	if err != nil || n != 7 {
		t.Fatalf("first Up = %d, %v; want 7 migrations applied", n, err)
	}
	n, err = migrations.Up(ctx, db, quiet)
	if err != nil || n != 0 {
		t.Fatalf("second Up = %d, %v; want nothing to apply", n, err)
	}
	v, err := migrations.Version(ctx, db)
	if err != nil || v != 7 {
		t.Errorf("Version = %d, %v; want 7", v, err)
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
	if fmt.Sprint(skus) != "[PRO-SUB ENT-PLAN ADDON-1]" {
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
	if total != 7 {
		t.Errorf("instances applied %v migrations in all, want 7 in total (each exactly once)", applied)
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
		"INSERT INTO products (sku, name, price) VALUES ('PRO-SUB', 'dup', 1)",
		"INSERT INTO products (sku, name, price) VALUES ('X', 'negative', -1)",
		"INSERT INTO products (sku, name) VALUES ('Y', 'no price')",
		"INSERT INTO products (sku, name, price) VALUES ('N', 'not a number', 'NaN')",
		"INSERT INTO products (sku, name, price) VALUES ('Z', 'too precise for 12,2', 12345678901.5)",
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
	if got := productRows(products); got != seedCatalog {
		t.Errorf("products = %s, want the seed's %s", got, seedCatalog)
	}
	avatar := "https://example.com/ada.png"
	u := models.User{ID: uuid.New(), Email: "ada@example.com", Name: "Ada", AvatarURL: &avatar}
	if err := db.WithContext(ctx).Create(&u).Error; err != nil {
		t.Fatal(err)
	}
	var got models.User
	if err := db.WithContext(ctx).First(&got, "id = ?", u.ID).Error; err != nil {
		t.Fatal(err)
	}
	if got.Email != u.Email || got.Name != u.Name || got.AvatarURL == nil || *got.AvatarURL != avatar || got.CreatedAt.IsZero() {
		t.Errorf("read back %+v, want %+v", got, u)
	}
	none := models.User{ID: uuid.New(), Email: "bo@example.com", Name: "Bo"}
	if err := db.WithContext(ctx).Create(&none).Error; err != nil {
		t.Fatal(err)
	}
	var gotNone models.User
	if err := db.WithContext(ctx).First(&gotNone, "id = ?", none.ID).Error; err != nil || gotNone.AvatarURL != nil {
		t.Errorf("a user without an avatar reads back %v (%v); want NULL", gotNone.AvatarURL, err)
	}
}

// seedCatalog is the seed's catalog, as productRows prints it.
const seedCatalog = "1 Pro Subscription 19.99 USD; 2 Enterprise Plan 99.00 USD; 3 One-time Add-on 9.99 USD"

func productRows(ps []models.Product) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%d %s %s %s", p.ID, p.Name, p.Price, p.Currency))
	}
	return strings.Join(out, "; ")
}

// TestSeedCatalogMigratesAnExistingDatabase: a database that an older
// release left at version 4 (the invented catalog in integer cents, empty
// avatars as ”) moves to the seed's catalog and NULL avatars; rows that
// were added or edited by hand keep their data, prices exactly; and Down
// then Up again lands in the same place.
func TestSeedCatalogMigratesAnExistingDatabase(t *testing.T) {
	ctx := t.Context()
	db := freshDB(t, "existing")
	if err := migrations.UpTo(ctx, db, 4); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		// The operator added a product and edited one of the old ones.
		"INSERT INTO products (sku, name, description, price_cents, currency) VALUES ('GIFT-25', 'Gift card', 'Twenty-five euros', 2500, 'EUR')",
		"UPDATE products SET name = 'Mechanical Keyboard (ISO)' WHERE sku = 'KB-001'",
		"INSERT INTO users (id, email, name) VALUES ('00000000-0000-4000-8000-000000000001', 'no@avatar.example', 'No Avatar')",
		"INSERT INTO users (id, email, name, avatar_url) VALUES ('00000000-0000-4000-8000-000000000002', 'has@avatar.example', 'Has', 'https://example.com/a.png')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	n, err := migrations.Up(ctx, db, quiet)
	if err != nil || n != 3 {
		t.Fatalf("Up on a version-4 database = %d, %v; want 3 migrations applied", n, err)
	}
	catalog := func() string {
		rows, err := db.QueryContext(ctx, "SELECT sku, name, price::text, currency FROM products ORDER BY sku")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var sku, name, price, cur string
			if err := rows.Scan(&sku, &name, &price, &cur); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %s %s %s", sku, name, price, cur))
		}
		return strings.Join(out, "; ")
	}
	want := "ADDON-1 One-time Add-on 9.99 USD; ENT-PLAN Enterprise Plan 99.00 USD; GIFT-25 Gift card 25.00 EUR; " +
		"KB-001 Mechanical Keyboard (ISO) 89.99 USD; PRO-SUB Pro Subscription 19.99 USD"
	if got := catalog(); got != want {
		t.Errorf("catalog after the upgrade:\n got %s\nwant %s", got, want)
	}
	var nulls, urls int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FILTER (WHERE avatar_url IS NULL), count(avatar_url) FROM users").Scan(&nulls, &urls); err != nil {
		t.Fatal(err)
	}
	if nulls != 1 || urls != 1 {
		t.Errorf("after the upgrade %d users have a NULL avatar and %d a URL; want 1 and 1", nulls, urls)
	}
	// Down to 4 and up again: the same catalog.
	if err := migrations.DownTo(ctx, db, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, db, quiet); err != nil {
		t.Fatal(err)
	}
	if got := catalog(); got != want {
		t.Errorf("catalog after down and up:\n got %s\nwant %s", got, want)
	}
}
