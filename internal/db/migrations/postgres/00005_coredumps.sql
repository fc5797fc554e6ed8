-- +goose Up
-- coredumps as the older service created it (revision 005, changed by 006/007); kept when
-- adopting such a database, plus what our ingest found in each dump.
CREATE TABLE IF NOT EXISTS coredumps (
    id SERIAL PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    chip VARCHAR(50) NOT NULL,
    firmware_version VARCHAR(50) NOT NULL,
    size INTEGER NOT NULL,
    parse_status VARCHAR(20) NOT NULL,
    parsed_output TEXT,
    uploaded_at TIMESTAMP NOT NULL,
    parsed_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS ix_coredumps_device_id ON coredumps (device_id);
CREATE INDEX IF NOT EXISTS ix_coredumps_device_uploaded ON coredumps (device_id, uploaded_at);

-- A database at the older revision 005/006 still has the legacy `filename` column
-- (NOT NULL at 005). We never write it; keep its values for migrate-to-s3 but let new rows omit it.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'coredumps' AND column_name = 'filename') THEN
        ALTER TABLE coredumps ALTER COLUMN filename DROP NOT NULL;
    END IF;
END
$$;
-- +goose StatementEnd

-- Ingest findings (NULL on rows that were never inspected, e.g. adopted from the older service).
ALTER TABLE coredumps
    ADD COLUMN IF NOT EXISTS container VARCHAR(10),
    ADD COLUMN IF NOT EXISTS dump_version BIGINT,
    ADD COLUMN IF NOT EXISTS checksum_ok BOOLEAN,
    ADD COLUMN IF NOT EXISTS app_elf_sha_prefix VARCHAR(64),
    ADD COLUMN IF NOT EXISTS recognized BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS sha256 CHAR(64),
    ADD COLUMN IF NOT EXISTS parse_error VARCHAR(40),
    ADD COLUMN IF NOT EXISTS report TEXT;

-- Upload log for the per-device rate limit: one row per accepted upload, kept for an hour.
-- Separate from coredumps because retention deletes those rows, which would let a crash
-- loop with MAX_COREDUMPS below the hourly limit upload (and churn storage) forever.
CREATE TABLE IF NOT EXISTS coredump_uploads (
    id BIGSERIAL PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    uploaded_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_coredump_uploads_device_uploaded ON coredump_uploads (device_id, uploaded_at);

-- +goose Down
DROP TABLE coredump_uploads;
DROP TABLE coredumps;
