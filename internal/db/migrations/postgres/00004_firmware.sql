-- +goose Up
-- firmware_versions as the older service's migration 006 created it (kept when adopting
-- such a database), plus the identity read from each uploaded image.
CREATE TABLE IF NOT EXISTS firmware_versions (
    id SERIAL PRIMARY KEY,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    uploaded_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    CONSTRAINT uq_firmware_versions_model_version UNIQUE (device_model_id, version)
);
CREATE INDEX IF NOT EXISTS ix_firmware_versions_device_model_id ON firmware_versions (device_model_id);
ALTER TABLE firmware_versions
    ADD COLUMN IF NOT EXISTS project_name VARCHAR(64),
    ADD COLUMN IF NOT EXISTS idf_version VARCHAR(64),
    ADD COLUMN IF NOT EXISTS chip VARCHAR(20),
    ADD COLUMN IF NOT EXISTS secure_version BIGINT,
    ADD COLUMN IF NOT EXISTS compile_date VARCHAR(32),
    ADD COLUMN IF NOT EXISTS compile_time VARCHAR(32),
    ADD COLUMN IF NOT EXISTS elf_sha256 CHAR(64),
    ADD COLUMN IF NOT EXISTS git_commit VARCHAR(100),
    ADD COLUMN IF NOT EXISTS bin_size BIGINT,
    ADD COLUMN IF NOT EXISTS bin_sha256 CHAR(64),
    ADD COLUMN IF NOT EXISTS artifacts TEXT;
CREATE INDEX IF NOT EXISTS ix_firmware_versions_elf_sha256 ON firmware_versions (elf_sha256);

-- +goose Down
DROP TABLE firmware_versions;
