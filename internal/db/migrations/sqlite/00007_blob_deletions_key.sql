-- +goose Up
-- Uploads check the outbox for their new object's key (and its parent prefixes) on every
-- write; without this index that check scans the whole queue.
CREATE INDEX ix_blob_deletions_key ON blob_deletions (key);

-- +goose Down
DROP INDEX ix_blob_deletions_key;
