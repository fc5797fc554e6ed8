-- +goose Up
-- Crash groups (internal/crashgroups); see the PostgreSQL migration for what each table holds.
CREATE TABLE crash_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
    fingerprint CHAR(64) NOT NULL,
    grouping_version INTEGER NOT NULL,
    title VARCHAR(500) NOT NULL,
    fault VARCHAR(200) NOT NULL,
    culprit VARCHAR(300) NOT NULL DEFAULT '',
    first_seen_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    dump_count BIGINT NOT NULL DEFAULT 0,
    device_count BIGINT NOT NULL DEFAULT 0,
    first_version VARCHAR(50) NOT NULL,
    last_version VARCHAR(50) NOT NULL,
    status VARCHAR(10) NOT NULL DEFAULT 'open',
    resolved_in_version VARCHAR(50),
    regressed_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT uq_crash_groups_model_fingerprint UNIQUE (model_id, fingerprint)
);
-- Listing: per model (or all) by each sort, newest first, keyset-paged on id.
CREATE INDEX ix_crash_groups_model_last_seen ON crash_groups (model_id, last_seen_at DESC, id DESC);
CREATE INDEX ix_crash_groups_model_devices ON crash_groups (model_id, device_count DESC, id DESC);
CREATE INDEX ix_crash_groups_model_dumps ON crash_groups (model_id, dump_count DESC, id DESC);
CREATE INDEX ix_crash_groups_last_seen ON crash_groups (last_seen_at DESC, id DESC);
CREATE INDEX ix_crash_groups_model_first_seen ON crash_groups (model_id, first_seen_at);

-- Every fingerprint that lands in a group: its own, and those merged into it.
CREATE TABLE crash_group_fingerprints (
    model_id INTEGER NOT NULL,
    fingerprint CHAR(64) NOT NULL,
    group_id BIGINT NOT NULL REFERENCES crash_groups (id) ON DELETE CASCADE,
    PRIMARY KEY (model_id, fingerprint)
);
CREATE INDEX ix_crash_group_fingerprints_group ON crash_group_fingerprints (group_id);

-- Devices of a group (device_count counts them; it stays when a device is deleted).
CREATE TABLE crash_group_devices (
    group_id BIGINT NOT NULL REFERENCES crash_groups (id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    dump_count BIGINT NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    last_version VARCHAR(50) NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX ix_crash_group_devices_group_last_seen ON crash_group_devices (group_id, last_seen_at DESC, device_id DESC);

-- Dumps per group, version, day (UTC, YYYY-MM-DD) and device: sums give dumps, row counts
-- distinct devices. Kept when dumps or devices are deleted.
CREATE TABLE crash_group_daily (
    group_id BIGINT NOT NULL REFERENCES crash_groups (id) ON DELETE CASCADE,
    version VARCHAR(50) NOT NULL,
    day VARCHAR(10) NOT NULL,
    device_id INTEGER NOT NULL,
    dumps BIGINT NOT NULL,
    PRIMARY KEY (group_id, version, day, device_id)
);
CREATE INDEX ix_crash_group_daily_group_day ON crash_group_daily (group_id, day);

-- Which group each stored dump is in (gone with the dump; the counts above stay).
CREATE TABLE crash_group_dumps (
    coredump_id INTEGER PRIMARY KEY REFERENCES coredumps (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES crash_groups (id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL,
    version VARCHAR(50) NOT NULL,
    day VARCHAR(10) NOT NULL,
    grouping_version INTEGER NOT NULL
);
CREATE INDEX ix_crash_group_dumps_group ON crash_group_dumps (group_id, coredump_id DESC);

-- The backfill of dumps decoded before grouping (or under an older GROUPING_VERSION):
-- one row per version, the cursor it has reached, and when it finished.
CREATE TABLE crash_group_backfill (
    grouping_version INTEGER PRIMARY KEY,
    after_id BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMP NOT NULL,
    done_at TIMESTAMP
);

-- +goose Down
DROP TABLE crash_group_backfill;
DROP TABLE crash_group_dumps;
DROP TABLE crash_group_daily;
DROP TABLE crash_group_devices;
DROP TABLE crash_group_fingerprints;
DROP TABLE crash_groups;
