-- +goose Up
-- Fleet view (internal/fleet): what each device last reported, and per-model history kept
-- FLEET_HISTORY_DAYS. Rows go with their device or model (ON DELETE CASCADE).

-- One row per device that has reported: written by the coalesced check-in flush, boots
-- and core dump uploads; merged so the latest report wins whichever replica wrote it.
CREATE TABLE device_status (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    last_seen_at TIMESTAMP NOT NULL,
    running_version VARCHAR(50),
    running_since TIMESTAMP,
    -- when running_version was last claimed: the later claim wins a merge
    version_seen_at TIMESTAMP,
    last_reset_reason VARCHAR(20),
    last_boot_at TIMESTAMP,
    last_boot_id VARCHAR(64)
);
CREATE INDEX ix_device_status_running_version ON device_status (running_version);
CREATE INDEX ix_device_status_last_seen_at ON device_status (last_seen_at);

-- Which devices were seen running which version on which day (days since 1970-01-01 UTC),
-- with the last time that day: a window's "seen" is exact to the flush interval.
CREATE TABLE fleet_device_days (
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    day INTEGER NOT NULL,
    version VARCHAR(50) NOT NULL,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    last_seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model_id, day, version, device_id)
);
CREATE INDEX ix_fleet_device_days_device ON fleet_device_days (device_id);
CREATE INDEX ix_fleet_device_days_day ON fleet_device_days (day);

-- Every boot once per (device, X-Boot-Id), with its reset reason and version.
CREATE TABLE fleet_boots (
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    boot_id VARCHAR(64) NOT NULL,
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50),
    reason VARCHAR(20) NOT NULL,
    booted_at TIMESTAMP NOT NULL,
    PRIMARY KEY (device_id, boot_id)
);
CREATE INDEX ix_fleet_boots_model_booted ON fleet_boots (model_id, booted_at, version, reason, device_id);
CREATE INDEX ix_fleet_boots_booted ON fleet_boots (booted_at);

-- Every stored core dump as a crash of its device on its version; unlike coredumps rows,
-- kept when MAX_COREDUMPS prunes the dump.
CREATE TABLE fleet_dumps (
    id BIGSERIAL PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    uploaded_at TIMESTAMP NOT NULL
);
CREATE INDEX ix_fleet_dumps_model_uploaded ON fleet_dumps (model_id, uploaded_at, version, device_id);
CREATE INDEX ix_fleet_dumps_device ON fleet_dumps (device_id);
-- Covering the overview's and pruning's reads by time: no row lookups.
CREATE INDEX ix_fleet_dumps_uploaded ON fleet_dumps (uploaded_at, model_id, device_id, version);

-- +goose Down
DROP TABLE fleet_dumps;
DROP TABLE fleet_boots;
DROP TABLE fleet_device_days;
DROP TABLE device_status;
