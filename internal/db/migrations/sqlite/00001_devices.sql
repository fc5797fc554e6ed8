-- +goose Up
CREATE TABLE device_models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(255) NOT NULL,
    firmware_version VARCHAR(50),
    config_schema TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX ix_device_models_code ON device_models (code);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key VARCHAR(8) NOT NULL,
    device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    device_name VARCHAR(255),
    device_entity_id VARCHAR(255),
    enable_ota BOOLEAN,
    active BOOLEAN NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX ix_devices_key ON devices (key);
CREATE INDEX ix_devices_device_model_id ON devices (device_model_id);

-- +goose Down
DROP TABLE devices;
DROP TABLE device_models;
