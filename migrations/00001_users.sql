-- +goose Up
-- A user's profile. The id is the caller's identity (X-Demo-UserId in demo
-- mode), so it is supplied by the application, never generated here.
CREATE TABLE users (
    id         uuid        PRIMARY KEY,
    email      text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    avatar_url text        NOT NULL DEFAULT '' CHECK (char_length(avatar_url) <= 2048),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE users;
