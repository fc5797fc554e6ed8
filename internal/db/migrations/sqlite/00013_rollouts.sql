-- +goose Up
-- Staged rollouts (internal/rollouts): a version reaching a growing share of a model's
-- devices, and per-device pins. firmware reads both to answer devices and to keep the
-- versions they name; only internal/rollouts writes them.
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    -- the model's current version when the rollout started (non-cohort devices keep it)
    previous_version VARCHAR(50),
    -- active, paused, halted, completed, aborted
    state VARCHAR(10) NOT NULL,
    -- JSON list of {"percent","min_minutes"}
    stages TEXT NOT NULL,
    stage INTEGER NOT NULL DEFAULT 0,
    -- the current stage's percent, copied so the device answer reads one column
    percent INTEGER NOT NULL,
    max_crash_free_drop REAL NOT NULL,
    min_devices INTEGER NOT NULL,
    max_new_group_devices INTEGER NOT NULL,
    on_halt VARCHAR(10) NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    started_at TIMESTAMP NOT NULL,
    stage_started_at TIMESTAMP NOT NULL,
    evaluated_at TIMESTAMP,
    finished_at TIMESTAMP,
    created_by VARCHAR(200) NOT NULL DEFAULT '',
    updated_at TIMESTAMP NOT NULL
);
-- The device answer and retention look up a model's unfinished rollout.
CREATE INDEX ix_rollouts_model_state ON rollouts (model_id, state);
CREATE INDEX ix_rollouts_state ON rollouts (state);

-- A device held on one version whatever its model or a rollout says.
CREATE TABLE device_firmware_pins (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    pinned_at TIMESTAMP NOT NULL
);
CREATE INDEX ix_device_firmware_pins_model ON device_firmware_pins (model_id, version);

-- +goose Down
DROP TABLE device_firmware_pins;
DROP TABLE rollouts;
