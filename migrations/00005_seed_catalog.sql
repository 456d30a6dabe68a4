-- +goose Up
-- A migration waits at most 5 s for its locks, rather than queue every
-- query behind it; the API retries it at start-up.
SET LOCAL lock_timeout = '5s';
-- The seed's catalog: products (id, name, price numeric(12,2)) with 'Pro
-- Subscription' 19.99, 'Enterprise Plan' 99.00 and 'One-time Add-on' 9.99.
-- 00002/00003 had invented a catalog (keyboards, a monitor) priced in
-- integer cents; this moves every row to the seed's exact decimal price and
-- replaces the invented rows with the seed's. sku (the key that keeps the
-- seed idempotent), description and currency stay: a price needs its
-- currency, and rows added by hand keep their descriptions.
ALTER TABLE products ADD COLUMN price numeric(12,2);
UPDATE products SET price = price_cents / 100.0;
ALTER TABLE products
    ALTER COLUMN price SET NOT NULL,
    ADD CONSTRAINT products_price_check CHECK (price >= 0 AND price <> 'NaN'),
    DROP COLUMN price_cents;

-- The invented rows go only as 00003 left them: a row someone edited is
-- theirs now and stays.
DELETE FROM products
WHERE (sku, name, description, price, currency) IN (
    ('KB-001', 'Mechanical Keyboard', 'Tenkeyless keyboard with hot-swappable switches', 89.99, 'USD'),
    ('MS-002', 'Wireless Mouse', 'Ergonomic mouse with a 70-day battery', 39.99, 'USD'),
    ('MN-003', '27" Monitor', '27-inch 1440p IPS monitor', 299.99, 'USD'));

-- On a database with no other product, the seed's rows are 1, 2 and 3, as
-- in the seed.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM products) THEN
        ALTER TABLE products ALTER COLUMN id RESTART WITH 1;
    END IF;
END
$$;
-- +goose StatementEnd

INSERT INTO products (sku, name, price) VALUES
    ('PRO-SUB', 'Pro Subscription', 19.99),
    ('ENT-PLAN', 'Enterprise Plan', 99.00),
    ('ADDON-1', 'One-time Add-on', 9.99)
ON CONFLICT (sku) DO NOTHING;

-- +goose Down
DELETE FROM products WHERE (sku, name, price) IN (
    ('PRO-SUB', 'Pro Subscription', 19.99),
    ('ENT-PLAN', 'Enterprise Plan', 99.00),
    ('ADDON-1', 'One-time Add-on', 9.99));
ALTER TABLE products ADD COLUMN price_cents bigint;
UPDATE products SET price_cents = round(price * 100);
ALTER TABLE products
    ALTER COLUMN price_cents SET NOT NULL,
    ADD CONSTRAINT products_price_cents_check CHECK (price_cents >= 0),
    DROP COLUMN price;
INSERT INTO products (sku, name, description, price_cents) VALUES
    ('KB-001', 'Mechanical Keyboard', 'Tenkeyless keyboard with hot-swappable switches', 8999),
    ('MS-002', 'Wireless Mouse', 'Ergonomic mouse with a 70-day battery', 3999),
    ('MN-003', '27" Monitor', '27-inch 1440p IPS monitor', 29999)
ON CONFLICT (sku) DO NOTHING;
