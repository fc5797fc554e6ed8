-- The older service's PostgreSQL schema at Alembic revision 005 (ORIGINAL-SYSTEM.md §1:
-- revisions 002-005), as its migrations created it. Test fixture for adoption.
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE device_models (
    id SERIAL PRIMARY KEY,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(255) NOT NULL,
    firmware_version VARCHAR(50),
    config_schema TEXT,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now(),
    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ix_device_models_code ON device_models (code);

CREATE TABLE devices (
    id SERIAL PRIMARY KEY,
    key VARCHAR(8) NOT NULL,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    device_name VARCHAR(255),
    device_entity_id VARCHAR(255),
    enable_ota BOOLEAN,
    rotation_state VARCHAR(20) NOT NULL DEFAULT 'OK',
    cached_secret VARCHAR(500),
    secret_created_at TIMESTAMP WITHOUT TIME ZONE,
    last_rotation_attempt_at TIMESTAMP WITHOUT TIME ZONE,
    last_rotation_completed_at TIMESTAMP WITHOUT TIME ZONE,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now(),
    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ix_devices_key ON devices (key);
CREATE INDEX ix_devices_device_model_id ON devices (device_model_id);
CREATE INDEX ix_devices_rotation_state ON devices (rotation_state);

CREATE TABLE settings (
    key VARCHAR(255) PRIMARY KEY,
    value TEXT,
    updated_at TIMESTAMP WITHOUT TIME ZONE
);

CREATE TABLE coredumps (
    id SERIAL PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    filename VARCHAR(255) NOT NULL,
    chip VARCHAR(50) NOT NULL,
    firmware_version VARCHAR(50) NOT NULL,
    size INTEGER NOT NULL,
    parse_status VARCHAR(20) NOT NULL,
    parsed_output TEXT,
    uploaded_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    parsed_at TIMESTAMP WITHOUT TIME ZONE,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now(),
    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX ix_coredumps_device_id ON coredumps (device_id);

INSERT INTO alembic_version (version_num) VALUES ('005');
