-- +goose Up
CREATE TABLE firmware_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    uploaded_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    project_name VARCHAR(64),
    idf_version VARCHAR(64),
    chip VARCHAR(20),
    secure_version BIGINT,
    compile_date VARCHAR(32),
    compile_time VARCHAR(32),
    elf_sha256 CHAR(64),
    git_commit VARCHAR(100),
    bin_size BIGINT,
    bin_sha256 CHAR(64),
    artifacts TEXT,
    CONSTRAINT uq_firmware_versions_model_version UNIQUE (device_model_id, version)
);
CREATE INDEX ix_firmware_versions_device_model_id ON firmware_versions (device_model_id);
CREATE INDEX ix_firmware_versions_elf_sha256 ON firmware_versions (elf_sha256);

-- +goose Down
DROP TABLE firmware_versions;
