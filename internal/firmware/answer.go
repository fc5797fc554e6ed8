package firmware

import (
	"context"
	"database/sql"
	"errors"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/cohort"
	"github.com/iotsupport/iotsupport/internal/devices"
)

// The device answer reads the tables internal/rollouts owns (device_firmware_pins,
// rollouts): a pin wins, then an unfinished rollout whose cohort holds the device (while
// active or paused, and while halted with on_halt=hold), then the model's current
// version. Reads only: rollouts writes them and tells this service (AnswersChanged).

// RolloutServes is the SQL condition on a rollout row r under which its cohort gets its
// version.
const RolloutServes = `(r.state IN ('active', 'paused') OR (r.state = 'halted' AND r.on_halt = 'hold'))`

// Rollout states that hold their version against retention and deletion, and that
// block another rollout of the model.
const unfinishedSQL = `('active', 'paused', 'halted')`

// answerSQL is the device answer's one query: the device's model, pin and the model's
// unfinished rollout, with the size and SHA-256 of each candidate version.
const answerSQL = `SELECT m.id, m.code, m.name, d.key, m.firmware_version, p.version, r.id, r.version, r.percent,
		fv.id IS NOT NULL, fv.bin_size, fv.bin_sha256, fp.id IS NOT NULL, fp.bin_size, fp.bin_sha256,
		fr.id IS NOT NULL, fr.bin_size, fr.bin_sha256
	FROM devices d JOIN device_models m ON m.id = d.device_model_id
	LEFT JOIN device_firmware_pins p ON p.device_id = d.id
	LEFT JOIN rollouts r ON r.model_id = m.id AND ` + RolloutServes + `
	LEFT JOIN firmware_versions fv ON fv.device_model_id = m.id AND fv.version = m.firmware_version
	LEFT JOIN firmware_versions fp ON fp.device_model_id = m.id AND fp.version = p.version
	LEFT JOIN firmware_versions fr ON fr.device_model_id = m.id AND fr.version = r.version
	WHERE d.id = $1`

// answerStmt is answerSQL prepared once: parsing and planning a seven-table join cost
// more than running it on SQLite, which keeps no statement cache of its own.
func (s *Service) answerStmt(ctx context.Context) (*sql.Stmt, error) {
	if st := s.answer.Load(); st != nil {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, answerSQL)
	if err != nil {
		return nil, err
	}
	if !s.answer.CompareAndSwap(nil, st) {
		st.Close()
	}
	return s.answer.Load(), nil
}

func (s *Service) currentOfDevice(ctx context.Context, deviceID int64) (*devices.Model, *Artifact, error) {
	var (
		m                 devices.Model
		key               string
		cur, pin, rollout sql.NullString
		rolloutID         sql.NullInt64
		percent           sql.NullInt64
		found             [3]bool
		size              [3]sql.NullInt64
		sha               [3]sql.NullString
	)
	stmt, err := s.answerStmt(ctx)
	if err != nil {
		return nil, nil, storeErr("get current firmware", err)
	}
	err = stmt.QueryRowContext(ctx, deviceID).Scan(&m.ID, &m.Code, &m.Name, &key, &cur, &pin, &rolloutID, &rollout, &percent,
		&found[0], &size[0], &sha[0], &found[1], &size[1], &sha[1], &found[2], &size[2], &sha[2])
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, apperr.NotFoundf("Device %d was not found", deviceID)
	}
	if err != nil {
		return nil, nil, storeErr("get current firmware", err)
	}
	fw, i := cur, 0
	switch {
	case pin.Valid:
		fw, i = pin, 1
	case rolloutID.Valid && cohort.In(key, rolloutID.Int64, int(percent.Int64)):
		fw, i = rollout, 2
	}
	if !fw.Valid {
		return &m, nil, apperr.NotFoundf("Firmware %s was not found", m.Code)
	}
	m.FirmwareVersion = &fw.String
	if !found[i] {
		return &m, nil, apperr.NotFoundf("FirmwareVersion %s %s was not found", m.Code, fw.String)
	}
	if size[i].Int64 > 0 && sha[i].String != "" {
		return &m, &Artifact{Code: m.Code, Version: fw.String, Name: "firmware.bin", Size: size[i].Int64, SHA256: sha[i].String}, nil
	}
	a, err := s.artifact(ctx, &m, fw.String, "firmware.bin") // adopted versions: sizes from the store
	return &m, a, err
}

// refuseWhileRolling refuses to make version current while the model has an unfinished
// rollout (its previous version would no longer be what the other devices run): the
// rollout is completed or aborted first. Re-making the current version current is no
// change and passes.
func refuseWhileRolling(ctx context.Context, tx *sql.Tx, modelID int64, version string) error {
	var id int64
	var rv, state string
	var current sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT r.id, r.version, r.state, m.firmware_version FROM rollouts r
		JOIN device_models m ON m.id = r.model_id WHERE r.model_id = $1 AND r.state IN `+unfinishedSQL+` LIMIT 1`, modelID).Scan(&id, &rv, &state, &current)
	if errors.Is(err, sql.ErrNoRows) || err == nil && current.Valid && current.String == version {
		return nil
	}
	if err != nil {
		return err
	}
	return apperr.Existsf("Rollout %d of version %s is %s: complete or abort it before making another version current", id, rv, state)
}

// heldVersions are the model's versions an unfinished rollout or a device pin uses:
// retention and deletion keep them.
func heldVersions(ctx context.Context, tx *sql.Tx, modelID int64) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT version FROM rollouts WHERE model_id = $1 AND state IN `+unfinishedSQL+`
		UNION SELECT version FROM device_firmware_pins WHERE model_id = $1`, modelID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
}

// HasVersionTx reports whether the model has version stored, inside tx (a rollout or a
// pin names only stored versions; hold the model with LockModel first).
func (s *Service) HasVersionTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions WHERE device_model_id = $1 AND version = $2`, modelID, version).Scan(&n)
	return n > 0, err
}

// CurrentTx is the model's current version ("" for none), inside tx.
func (s *Service) CurrentTx(ctx context.Context, tx *sql.Tx, modelID int64) (string, error) {
	return s.models.FirmwareVersionTx(ctx, tx, modelID)
}

// MakeCurrentTx makes a stored version current inside tx (a rollout completing); the
// caller holds the model (LockModel) and calls AnswersChanged after commit.
func (s *Service) MakeCurrentTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) error {
	ok, err := s.HasVersionTx(ctx, tx, modelID, version)
	if err != nil {
		return err
	}
	if !ok {
		return apperr.NotFoundf("FirmwareVersion %s was not found", version)
	}
	return s.models.SetFirmwareVersionTx(ctx, tx, modelID, version)
}

// AnswersChanged is called after a committed change of what some devices are to run
// (a pin, a rollout's stage or state): this replica's cached answers are dropped at
// once, and the devices are notified of their new version DEVICE_CACHE_TTL later, when
// every replica's cache has expired. byVersion maps a version to device client ids.
func (s *Service) AnswersChanged(ctx context.Context, byVersion map[string][]string) {
	s.current.Clear()
	ctx = context.WithoutCancel(ctx)
	for version, ids := range byVersion {
		if len(ids) == 0 {
			continue
		}
		s.later.run(func() { s.notify.FirmwareUpdated(ctx, ids, version) })
	}
}

// otherAnswer reports, for the model's devices by key, which ones are answered a
// version other than the current one (a pin, a rollout's cohort): a change of the
// current version is not theirs to be told about.
func (s *Service) otherAnswer(ctx context.Context, modelID int64) (func(key string) bool, error) {
	pinned := map[string]bool{}
	rows, err := s.db.QueryContext(ctx, `SELECT d.key FROM device_firmware_pins p JOIN devices d ON d.id = p.device_id WHERE p.model_id = $1`, modelID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		pinned[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var id, percent int64
	err = s.db.QueryRowContext(ctx, `SELECT r.id, r.percent FROM rollouts r WHERE r.model_id = $1 AND `+RolloutServes, modelID).Scan(&id, &percent)
	if errors.Is(err, sql.ErrNoRows) {
		id = 0
	} else if err != nil {
		return nil, err
	}
	return func(key string) bool {
		return pinned[key] || (id != 0 && cohort.In(key, id, int(percent)))
	}, nil
}
