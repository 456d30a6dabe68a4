-- +goose Up
-- The seed's three demo products. ON CONFLICT keeps the seed idempotent even
-- if someone inserted one of these SKUs by hand.
INSERT INTO products (sku, name, description, price_cents) VALUES
    ('KB-001', 'Mechanical Keyboard', 'Tenkeyless keyboard with hot-swappable switches', 8999),
    ('MS-002', 'Wireless Mouse', 'Ergonomic mouse with a 70-day battery', 3999),
    ('MN-003', '27" Monitor', '27-inch 1440p IPS monitor', 29999)
ON CONFLICT (sku) DO NOTHING;

-- +goose Down
DELETE FROM products WHERE sku IN ('KB-001', 'MS-002', 'MN-003');
