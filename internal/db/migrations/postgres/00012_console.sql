-- +goose Up
CREATE TABLE console_sessions (
    id_hash CHAR(64) PRIMARY KEY,
    csrf_token VARCHAR(64) NOT NULL,
    kind VARCHAR(20) NOT NULL,
    token_id BIGINT,
    subject VARCHAR(255) NOT NULL,
    name VARCHAR(255),
    email VARCHAR(255),
    roles VARCHAR(100) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX ix_console_sessions_expires ON console_sessions (expires_at);
-- The console's overview counts the last week's dumps of every model.
CREATE INDEX ix_coredumps_uploaded_at ON coredumps (uploaded_at);

-- +goose Down
DROP INDEX ix_coredumps_uploaded_at;
DROP TABLE console_sessions;
