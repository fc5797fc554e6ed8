-- +goose Up
-- The older service's rotation bookkeeping (its revision 002 created these columns, so an
-- adopted database already has them and keeps their values), mapped onto our secret
-- rotation: issuing credentials sets all of them.
ALTER TABLE devices
    ADD COLUMN IF NOT EXISTS rotation_state VARCHAR(20) NOT NULL DEFAULT 'OK',
    ADD COLUMN IF NOT EXISTS last_rotation_attempt_at TIMESTAMP,
    ADD COLUMN IF NOT EXISTS last_rotation_completed_at TIMESTAMP,
    -- The older devices.active = false ("left out of credential rotation"); legacy.Adopt
    -- moves it here so that our active (may authenticate) does not lock such devices out.
    ADD COLUMN IF NOT EXISTS rotation_excluded BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS ix_devices_rotation_state ON devices (rotation_state);

-- +goose Down
DROP INDEX IF EXISTS ix_devices_rotation_state;
ALTER TABLE devices DROP COLUMN rotation_excluded, DROP COLUMN last_rotation_completed_at,
    DROP COLUMN last_rotation_attempt_at, DROP COLUMN rotation_state;
