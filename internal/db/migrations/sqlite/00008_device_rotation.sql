-- +goose Up
-- Rotation bookkeeping with the older service's column names (see the PostgreSQL twin);
-- issuing credentials sets them.
ALTER TABLE devices ADD COLUMN rotation_state VARCHAR(20) NOT NULL DEFAULT 'OK';
ALTER TABLE devices ADD COLUMN last_rotation_attempt_at TIMESTAMP;
ALTER TABLE devices ADD COLUMN last_rotation_completed_at TIMESTAMP;
ALTER TABLE devices ADD COLUMN rotation_excluded BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX ix_devices_rotation_state ON devices (rotation_state);

-- +goose Down
DROP INDEX ix_devices_rotation_state;
ALTER TABLE devices DROP COLUMN rotation_excluded;
ALTER TABLE devices DROP COLUMN last_rotation_completed_at;
ALTER TABLE devices DROP COLUMN last_rotation_attempt_at;
ALTER TABLE devices DROP COLUMN rotation_state;
