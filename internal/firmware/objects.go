package firmware

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// This file answers the consistency check (fsck) for the objects under firmware/: which
// objects the versions expect, whether a version owns a key, and the repair of a version
// that lost an object.

// ParseKey is the inverse of Key; ok is false for a key outside the layout.
func ParseKey(key string) (code, version, artifact string, ok bool) {
	rest, ok := strings.CutPrefix(key, Root)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// ObjectPrefix is the folder of the objects this service owns.
func (s *Service) ObjectPrefix() string { return Root }

// parseArtifacts reads a version's artifact record; nil when there is none (a version
// adopted from the older service) or it cannot be read.
func parseArtifacts(stored string) map[string]ArtifactInfo {
	if stored == "" {
		return nil
	}
	var m map[string]ArtifactInfo
	if json.Unmarshal([]byte(stored), &m) != nil {
		return nil
	}
	return m
}

// Recorded returns how many versions exist and the objects they expect: each recorded
// artifact with its size and SHA-256, or, for a version without an artifact record, its
// image and (Folder) whatever else is in its folder.
func (s *Service) Recorded(ctx context.Context) (int, []blob.Recorded, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.code, fv.version, COALESCE(fv.artifacts, ''),
		CASE WHEN m.firmware_version = fv.version THEN 1 ELSE 0 END
		FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id`)
	if err != nil {
		return 0, nil, fmt.Errorf("read firmware versions: %w", db.Classify(err))
	}
	defer rows.Close()
	n := 0
	var out []blob.Recorded
	for rows.Next() {
		var code, ver, stored string
		var cur int
		if err := rows.Scan(&code, &ver, &stored, &cur); err != nil {
			return 0, nil, err
		}
		n++
		missing := func(art string) string {
			m := fmt.Sprintf("firmware %s %s has no %s", code, ver, art)
			if cur == 1 {
				m += " (current version)"
			}
			return m
		}
		arts := parseArtifacts(stored)
		if arts == nil {
			out = append(out, blob.Recorded{Key: Key(code, ver, "firmware.bin"), Size: -1, Folder: true, Missing: missing("firmware.bin")})
			continue
		}
		for name, a := range arts {
			out = append(out, blob.Recorded{Key: Key(code, ver, name), Size: a.Size, SHA256: a.SHA256, Missing: missing(name)})
		}
	}
	return n, out, db.Classify(rows.Err())
}

// Expects reports whether the version of key still exists (a fresh look-up before a
// missing object is reported).
func (s *Service) Expects(ctx context.Context, key string) (bool, error) {
	code, ver, _, ok := ParseKey(key)
	if !ok {
		return false, nil
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id
		WHERE m.code = $1 AND fv.version = $2`, code, ver).Scan(&n)
	return n > 0, db.Classify(err)
}

// OwnedTx reports whether a version owns key: the version lists the artifact, or has no
// artifact record (adopted). It first locks the model's row for the rest of tx, the lock
// uploads take, so an upload cannot create the owner between this answer and the
// caller's deletion of an orphan.
func (s *Service) OwnedTx(ctx context.Context, tx *sql.Tx, key string) (bool, error) {
	code, ver, art, ok := ParseKey(key)
	if !ok {
		return false, nil
	}
	if err := s.db.LockRow(ctx, tx, db.ForUpdate, "device_models", "code", code); err != nil {
		return false, err
	}
	var stored sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT fv.artifacts FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id
		WHERE m.code = $1 AND fv.version = $2`, code, ver).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	arts := parseArtifacts(stored.String)
	if arts == nil {
		return true, nil
	}
	_, ok = arts[art]
	return ok, nil
}

// RepairMissing removes the version whose object at key is gone from the history; its
// remaining objects are queued for deletion (docs/ARCHITECTURE.md, rule 2). The model's current
// version is left as it is and reported unrepairable: devices would lose their update.
// Nothing changes if the object is back (written meanwhile); a version already gone
// counts as repaired.
func (s *Service) RepairMissing(ctx context.Context, key string) (repaired, unrepairable bool, err error) {
	code, ver, _, ok := ParseKey(key)
	if !ok {
		return false, false, fmt.Errorf("firmware: %q is not a firmware key", key)
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := s.db.LockRow(ctx, tx, db.ForUpdate, "device_models", "code", code); err != nil {
			return err
		}
		var id int64
		var cur sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT fv.id, m.firmware_version FROM device_models m JOIN firmware_versions fv ON fv.device_model_id = m.id
			WHERE m.code = $1 AND fv.version = $2`, code, ver).Scan(&id, &cur)
		if errors.Is(err, sql.ErrNoRows) {
			repaired = true // gone meanwhile
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Valid && cur.String == ver {
			unrepairable = true
			return nil
		}
		if _, err := s.store.Stat(ctx, key); err == nil {
			return nil // written meanwhile
		} else if !errors.Is(err, blob.ErrNotFound) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_versions WHERE id = $1`, id); err != nil {
			return err
		}
		repaired = true
		return outbox.EnqueuePrefix(ctx, tx, Prefix(code, ver))
	})
	return repaired, unrepairable, err
}
