-- +goose Up
-- The older service ran on PostgreSQL only, so nothing is adopted here; the tables exist
-- so the legacy queries work on either dialect.
CREATE TABLE IF NOT EXISTS legacy_adoption (
    revision VARCHAR(32) NOT NULL,
    adopted_at TIMESTAMP NOT NULL,
    finalized_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS legacy_coredump_files (
    device_id INTEGER NOT NULL,
    filename VARCHAR(255) NOT NULL,
    coredump_id INTEGER NOT NULL,
    migrated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (device_id, filename)
);

-- +goose Down
DROP TABLE legacy_coredump_files;
DROP TABLE legacy_adoption;
