-- +goose Up
SET LOCAL lock_timeout = '5s';
-- The seed stores avatar_url as NULL when a user has none; 00001 stored ''.
ALTER TABLE users ALTER COLUMN avatar_url DROP NOT NULL, ALTER COLUMN avatar_url DROP DEFAULT;
UPDATE users SET avatar_url = NULL WHERE avatar_url = '';

-- +goose Down
UPDATE users SET avatar_url = '' WHERE avatar_url IS NULL;
ALTER TABLE users ALTER COLUMN avatar_url SET DEFAULT '', ALTER COLUMN avatar_url SET NOT NULL;
