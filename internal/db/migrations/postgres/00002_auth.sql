-- +goose Up
CREATE TABLE api_tokens (
    id SERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    role VARCHAR(20) NOT NULL,
    token_hash CHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE UNIQUE INDEX ix_api_tokens_hash ON api_tokens (token_hash);
CREATE UNIQUE INDEX ix_api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Older databases (revision 008) already have secret_created_at.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS secret_hash CHAR(64);
ALTER TABLE devices ADD COLUMN IF NOT EXISTS secret_created_at TIMESTAMP;

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    actor_kind VARCHAR(20) NOT NULL,
    actor VARCHAR(255) NOT NULL,
    method VARCHAR(10) NOT NULL,
    path VARCHAR(500) NOT NULL,
    route VARCHAR(200) NOT NULL,
    status INTEGER NOT NULL,
    request_id VARCHAR(128)
);
CREATE INDEX ix_audit_log_at ON audit_log (at);

-- +goose Down
DROP TABLE audit_log;
ALTER TABLE devices DROP COLUMN secret_hash;
DROP TABLE api_tokens;
