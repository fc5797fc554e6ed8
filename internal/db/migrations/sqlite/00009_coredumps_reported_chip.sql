-- +goose Up
-- The chip the device named at upload when the dump's own header names another; the row's
-- chip is then the dump's.
ALTER TABLE coredumps ADD COLUMN reported_chip VARCHAR(50);

-- +goose Down
ALTER TABLE coredumps DROP COLUMN reported_chip;
