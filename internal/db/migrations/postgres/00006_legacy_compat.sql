-- +goose Up
-- Adopting the older service's database (see internal/legacy). Its revisions 005-007 have
-- no devices.active (its 008 added it); 00001's CREATE TABLE IF NOT EXISTS kept theirs.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS active BOOLEAN NOT NULL DEFAULT true;

-- The baseline `iotsupport migrate` recorded when it adopted such a database.
CREATE TABLE IF NOT EXISTS legacy_adoption (
    revision VARCHAR(32) NOT NULL,
    adopted_at TIMESTAMP NOT NULL,
    finalized_at TIMESTAMP
);

-- Which legacy core dump file migrate-to-s3 moved into which row, written in the same
-- transaction that clears coredumps.filename, so a re-run recognises the file.
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
