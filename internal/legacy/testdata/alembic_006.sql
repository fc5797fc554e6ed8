-- The older service's revision 006: firmware_versions; coredumps.filename nullable.
CREATE TABLE firmware_versions (
    id SERIAL PRIMARY KEY,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    uploaded_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_firmware_versions_model_version UNIQUE (device_model_id, version)
);
CREATE INDEX ix_firmware_versions_device_model_id ON firmware_versions (device_model_id);
ALTER TABLE coredumps ALTER COLUMN filename DROP NOT NULL;
UPDATE alembic_version SET version_num = '006';
