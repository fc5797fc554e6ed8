-- +goose Up
-- Names follow the older service's schema so its databases can be adopted in place.
CREATE TABLE IF NOT EXISTS device_models (
    id SERIAL PRIMARY KEY,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(255) NOT NULL,
    firmware_version VARCHAR(50),
    config_schema TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_device_models_code ON device_models (code);

CREATE TABLE IF NOT EXISTS devices (
    id SERIAL PRIMARY KEY,
    key VARCHAR(8) NOT NULL,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    device_name VARCHAR(255),
    device_entity_id VARCHAR(255),
    enable_ota BOOLEAN,
    active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_devices_key ON devices (key);
CREATE INDEX IF NOT EXISTS ix_devices_device_model_id ON devices (device_model_id);

-- +goose Down
DROP TABLE devices;
DROP TABLE device_models;
