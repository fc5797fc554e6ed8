package firmware

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
)

// ELFRef names the ELF of one stored version.
type ELFRef struct {
	Version string
	// SHA256 is the ELF's SHA-256 in lower-case hex; "" for versions adopted from the
	// older service, whose ELF hash was never recorded.
	SHA256 string
}

// VersionELF returns the ELF of a stored version of the model (ok false when the version
// is not stored). q is the database or the caller's transaction.
func (s *Service) VersionELF(ctx context.Context, q db.Querier, modelID int64, version string) (ELFRef, bool, error) {
	var sha sql.NullString
	err := q.QueryRowContext(ctx, `SELECT elf_sha256 FROM firmware_versions WHERE device_model_id = $1 AND version = $2`,
		modelID, version).Scan(&sha)
	if errors.Is(err, sql.ErrNoRows) {
		return ELFRef{}, false, nil
	}
	if err != nil {
		return ELFRef{}, false, db.Classify(err)
	}
	return ELFRef{Version: version, SHA256: strings.ToLower(strings.TrimSpace(sha.String))}, true, nil
}

// ELFByPrefix returns the newest stored version of the model whose ELF SHA-256 starts
// with the lower-case hex prefix (ok false when none does).
func (s *Service) ELFByPrefix(ctx context.Context, q db.Querier, modelID int64, prefix string) (ELFRef, bool, error) {
	var r ELFRef
	err := q.QueryRowContext(ctx, `SELECT version, elf_sha256 FROM firmware_versions WHERE device_model_id = $1 AND elf_sha256 IS NOT NULL
		AND substr(elf_sha256, 1, $2) = $3 ORDER BY uploaded_at DESC LIMIT 1`, modelID, len(prefix), prefix).Scan(&r.Version, &r.SHA256)
	if errors.Is(err, sql.ErrNoRows) {
		return ELFRef{}, false, nil
	}
	if err != nil {
		return ELFRef{}, false, db.Classify(err)
	}
	return r, true, nil
}

// ReadELF reads a stored version's ELF whole (blob.ErrNotFound when it is missing).
func (s *Service) ReadELF(ctx context.Context, modelCode, version string) ([]byte, error) {
	return blob.ReadAll(ctx, s.store, Key(modelCode, version, "firmware.elf"), 0)
}

// Needed reports which of the given versions of the model (version → ELF SHA-256, "" when
// unknown) undecoded core dumps still need: retention keeps those, and so must anything
// that plans retention ahead (migrate-to-s3 mirrors it before importing).
func (s *Service) Needed(ctx context.Context, modelID int64, versions map[string]string) (map[string]bool, error) {
	var out map[string]bool
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.protected(ctx, tx, modelID, versions)
		return err
	})
	return out, db.Err("firmware needed by core dumps", err)
}
