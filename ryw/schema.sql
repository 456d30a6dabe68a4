-- The one table ryw keeps on the primary: the fence (see ryw.Schema).
CREATE TABLE IF NOT EXISTS ryw_fence (
    id  smallint PRIMARY KEY CHECK (id = 1),
    lsn pg_lsn   NOT NULL
);
INSERT INTO ryw_fence (id, lsn) VALUES (1, '0/0') ON CONFLICT (id) DO NOTHING;
