-- The tables ryw keeps on the primary (see ryw.Schema): the fence, and
-- each instance's acknowledgement of it.
CREATE TABLE IF NOT EXISTS ryw_fence (
    id  smallint PRIMARY KEY CHECK (id = 1),
    lsn pg_lsn   NOT NULL
);
INSERT INTO ryw_fence (id, lsn) VALUES (1, '0/0') ON CONFLICT (id) DO NOTHING;
-- One row per running instance: the fence it routes by, on which timeline,
-- and when it last said so. A fenced write is answered once every instance
-- that may still be routing by an older fence has acknowledged its own.
CREATE TABLE IF NOT EXISTS ryw_fence_ack (
    instance text        PRIMARY KEY,
    timeline integer     NOT NULL,
    fence    pg_lsn      NOT NULL,
    at       timestamptz NOT NULL
);
