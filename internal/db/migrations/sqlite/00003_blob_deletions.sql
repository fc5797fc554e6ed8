-- +goose Up
-- Outbox of object deletions (DESIGN.md consistency rule 2): rows are written in the
-- transaction that deletes the rows owning the objects; a worker deletes the objects after commit.
CREATE TABLE blob_deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key VARCHAR(1024) NOT NULL,
    is_prefix BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT
);
CREATE INDEX ix_blob_deletions_next ON blob_deletions (next_attempt_at);

-- +goose Down
DROP TABLE blob_deletions;
