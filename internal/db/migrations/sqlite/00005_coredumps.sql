-- +goose Up
-- coredumps with the older service's columns (ORIGINAL-SYSTEM §1.4, without the dropped
-- `filename`) plus what our ingest found in each dump.
CREATE TABLE coredumps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    chip VARCHAR(50) NOT NULL,
    firmware_version VARCHAR(50) NOT NULL,
    size INTEGER NOT NULL,
    parse_status VARCHAR(20) NOT NULL,
    parsed_output TEXT,
    uploaded_at TIMESTAMP NOT NULL,
    parsed_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    container VARCHAR(10),
    dump_version BIGINT,
    checksum_ok BOOLEAN,
    app_elf_sha_prefix VARCHAR(64),
    recognized BOOLEAN NOT NULL DEFAULT 0,
    sha256 CHAR(64),
    parse_error VARCHAR(40),
    report TEXT
);
CREATE INDEX ix_coredumps_device_id ON coredumps (device_id);
CREATE INDEX ix_coredumps_device_uploaded ON coredumps (device_id, uploaded_at);

-- Upload log for the per-device rate limit (see the PostgreSQL migration for why it is
-- separate from coredumps).
CREATE TABLE coredump_uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    uploaded_at TIMESTAMP NOT NULL
);
CREATE INDEX ix_coredump_uploads_device_uploaded ON coredump_uploads (device_id, uploaded_at);

-- +goose Down
DROP TABLE coredump_uploads;
DROP TABLE coredumps;
