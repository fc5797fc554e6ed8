package legacy

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
)

// Options configure MigrateToS3.
type Options struct {
	DB *db.DB
	// Store is the destination. In a dry run it may be nil: the destination does not
	// exist yet (a bucket is never created by a dry run) and counts as empty.
	Store blob.Store
	// Firmware imports bundles and says which versions undecoded dumps need; Devices
	// lists the models. Both come from app.Assemble, as the server's do.
	Firmware     *firmware.Service
	Devices      *devices.Service
	AssetsDir    string
	CoredumpsDir string
	DryRun       bool
	// MaxFirmwares mirrors retention so that versions it would prune at once are not
	// imported (and re-imported by every re-run).
	MaxFirmwares int
	Limits       bundle.Limits
	// Progress receives one line per action (may be nil).
	Progress io.Writer
	// BeforeCommit runs after a core dump object was written and before its row change
	// commits; AfterCommit after each committed firmware or core dump. For crash tests.
	BeforeCommit func(done int)
	AfterCommit  func(done int)
}

// Report is the outcome of a run (the summary of the older service's command, plus what it
// found already migrated).
type Report struct {
	DryRun            bool     `json:"dry_run"`
	FirmwareMigrated  int      `json:"firmware_migrated"`
	FirmwareSkipped   int      `json:"firmware_skipped"`
	FirmwareAlready   int      `json:"firmware_already_migrated"`
	FlatBinaries      int      `json:"flat_binaries_skipped"`
	CoredumpsMigrated int      `json:"coredumps_migrated"`
	CoredumpsSkipped  int      `json:"coredumps_skipped"`
	CoredumpsAlready  int      `json:"coredumps_already_migrated"`
	Orphans           []string `json:"orphan_files"`
	MissingFiles      []string `json:"rows_without_file"`
	Actions           []string `json:"actions"`
	Warnings          []string `json:"warnings"`
}

// NothingToDo reports whether the run found nothing left to move.
func (r *Report) NothingToDo() bool { return r.FirmwareMigrated == 0 && r.CoredumpsMigrated == 0 }

func (r *Report) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

type migrator struct {
	o       Options
	r       *Report
	done    int
	planned map[string]bool // model/version a dry run would import
}

func (m *migrator) action(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	m.r.Actions = append(m.r.Actions, line)
	if m.o.Progress != nil {
		fmt.Fprintln(m.o.Progress, line)
	}
}

func (m *migrator) committed() {
	m.done++
	if m.o.AfterCommit != nil {
		m.o.AfterCommit(m.done)
	}
}

// MigrateToS3 moves the older service's firmware ZIPs and core dump files into the object
// store. Per-file problems become warnings; an error means the database or the store failed.
// Every firmware version and every core dump is committed on its own, so an interrupted run
// resumes where it stopped, and a re-run changes nothing.
func MigrateToS3(ctx context.Context, o Options) (*Report, error) {
	m := &migrator{o: o, r: &Report{DryRun: o.DryRun, Orphans: []string{}, MissingFiles: []string{}, Actions: []string{}, Warnings: []string{}}}
	if !o.DryRun && (o.Store == nil || o.Firmware == nil) {
		return nil, errors.New("migrate-to-s3: a store and the firmware service are required")
	}
	if o.MaxFirmwares < 1 {
		o.MaxFirmwares = 5
		m.o.MaxFirmwares = 5
	}
	if err := m.firmware(ctx); err != nil {
		return m.r, err
	}
	if err := m.coredumps(ctx); err != nil {
		return m.r, err
	}
	return m.r, nil
}

// sourceDir returns whether dir is set and exists; a set but missing directory is a warning.
func (m *migrator) sourceDir(dir, what string) bool {
	if dir == "" {
		return false
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		m.r.warn("%s %s is not a directory; %s skipped", strings.ToUpper(what)+"_DIR", dir, what)
		return false
	}
	return true
}

type model struct {
	id      int64
	code    string
	current string
}

type candidate struct {
	file    string
	mtime   time.Time
	f       *os.File
	b       *bundle.Bundle
	arts    map[string]firmware.ArtifactInfo
	replace bool // an older service's row without our artifact record
}

func (m *migrator) models(ctx context.Context) (map[string]*model, error) {
	ms, err := m.o.Devices.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]*model{}
	for _, dm := range ms {
		md := &model{id: dm.ID, code: dm.Code}
		if dm.FirmwareVersion != nil {
			md.current = *dm.FirmwareVersion
		}
		out[md.code] = md
	}
	return out, nil
}

func (m *migrator) versions(ctx context.Context, modelID int64) (map[string]firmware.StoredVersion, error) {
	return firmware.StoredVersions(ctx, m.o.DB, modelID)
}

// inStore reports whether the version's image is already stored (a version the older
// service itself put into S3) and whether it has the bundle's size.
func (m *migrator) inStore(ctx context.Context, code, version string, arts map[string]firmware.ArtifactInfo) (present, sameSize bool, err error) {
	if m.o.Store == nil {
		return false, false, nil
	}
	key := firmware.Key(code, version, bundle.ObjBin)
	info, err := m.o.Store.Stat(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("stat %s: %w", key, err)
	}
	return true, info.Size == arts[bundle.ObjBin].Size, nil
}

func (m *migrator) firmware(ctx context.Context) error {
	if !m.sourceDir(m.o.AssetsDir, "assets") {
		return nil
	}
	models, err := m.models(ctx)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(m.o.AssetsDir)
	if err != nil {
		return fmt.Errorf("read ASSETS_DIR: %w", err)
	}
	flat := map[string]string{} // model code -> flat .bin path
	for _, e := range entries {
		if !e.IsDir() {
			if strings.HasSuffix(e.Name(), ".bin") {
				m.r.FlatBinaries++
				m.r.FirmwareSkipped++
				if code, ok := strings.CutPrefix(strings.TrimSuffix(e.Name(), ".bin"), "firmware-"); ok {
					flat[code] = e.Name()
				}
			}
			continue
		}
		md, ok := models[e.Name()]
		if !ok {
			m.r.warn("Model directory '%s' has no matching DB record, skipping", e.Name())
			m.r.FirmwareSkipped++
			continue
		}
		if err := m.model(ctx, md, filepath.Join(m.o.AssetsDir, e.Name())); err != nil {
			return err
		}
	}
	// A current version that was never a bundle cannot be served.
	for _, code := range sortedKeys(models) {
		md := models[code]
		if md.current == "" {
			continue
		}
		vs, err := m.versions(ctx, md.id)
		if err != nil {
			return err
		}
		if _, ok := vs[md.current]; ok || m.planned[code+"/"+md.current] {
			continue
		}
		if f, ok := flat[code]; ok {
			m.r.warn("Model '%s' has firmware_version %s, which exists only as the legacy flat %s (not migrated): devices will get 404 until a bundle is uploaded", code, md.current, f)
		} else {
			m.r.warn("Model '%s' has firmware_version %s, but no bundle of that version exists: devices will get 404 until a bundle is uploaded", code, md.current)
		}
	}
	return nil
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (m *migrator) model(ctx context.Context, md *model, dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, "firmware-*.zip"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	var cands []*candidate
	defer func() {
		for _, c := range cands {
			c.f.Close()
		}
	}()
	byVersion := map[string]*candidate{}
	for _, path := range names {
		file := filepath.Base(path)
		c, err := m.open(md.code, path)
		if err != nil {
			m.r.warn("Failed to migrate firmware %s/%s: %v", md.code, file, err)
			m.r.FirmwareSkipped++
			continue
		}
		if named := strings.TrimSuffix(strings.TrimPrefix(file, "firmware-"), ".zip"); named != c.b.Version {
			m.r.warn("Firmware %s/%s: the file name says %s but the image is version %s; using %s", md.code, file, named, c.b.Version, c.b.Version)
		}
		if prev, dup := byVersion[c.b.Version]; dup {
			// Two files of one version: the newer file is what the older service served last.
			keep := c
			if prev.mtime.After(c.mtime) {
				keep = prev
			}
			m.r.warn("Firmware %s: %s and %s both hold version %s; using %s", md.code, prev.file, c.file, c.b.Version, keep.file)
			m.r.FirmwareSkipped++
			byVersion[c.b.Version] = keep
			cands = append(cands, c)
			continue
		}
		byVersion[c.b.Version] = c
		cands = append(cands, c)
	}
	have, err := m.versions(ctx, md.id)
	if err != nil {
		return err
	}
	var todo []*candidate
	for _, v := range sortedKeys(byVersion) {
		c := byVersion[v]
		if e, ok := have[v]; ok {
			switch {
			case e.Artifacts.Valid && firmware.SameArtifacts(e.Artifacts.String, c.arts):
				m.r.FirmwareAlready++
				continue
			case e.Artifacts.Valid:
				m.r.warn("Firmware %s/%s: version %s already exists with different content; left as it is", md.code, c.file, v)
				m.r.FirmwareSkipped++
				continue
			}
			// A row of the older service (it has no artifact record): already in the store?
			present, sameSize, err := m.inStore(ctx, md.code, v, c.arts)
			if err != nil {
				return err
			}
			if present {
				// What the older service stored and served wins over a file on disk.
				if !sameSize {
					m.r.warn("Firmware %s/%s: version %s is already in object storage with a different image; left as it is", md.code, c.file, v)
				}
				m.r.FirmwareAlready++
				continue
			}
			c.replace = true
		}
		todo = append(todo, c)
	}
	// Mirror retention: of the stored and imported versions, the newest MaxFirmwares by
	// upload time, the current version and the versions undecoded core dumps need stay;
	// importing others would prune them at once.
	type entry struct {
		version string
		at      time.Time
	}
	var all []entry
	for v, e := range have {
		if c, ok := byVersion[v]; ok && c.replace {
			continue
		}
		all = append(all, entry{v, e.UploadedAt})
	}
	for _, c := range todo {
		all = append(all, entry{c.b.Version, c.mtime})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at.After(all[j].at) })
	elfs := map[string]string{}
	for _, c := range todo {
		elfs[c.b.Version] = hex.EncodeToString(c.b.Image.AppELFSHA256[:])
	}
	kept, err := m.o.Firmware.Needed(ctx, md.id, elfs)
	if err != nil {
		return err
	}
	kept[md.current] = true
	for i, e := range all {
		if i < m.o.MaxFirmwares {
			kept[e.version] = true
		}
	}
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].mtime.Before(todo[j].mtime) })
	for _, c := range todo {
		v := c.b.Version
		if !kept[v] {
			m.r.warn("Firmware %s/%s (version %s) is older than the newest %d versions (MAX_FIRMWARES); not migrated", md.code, c.file, v, m.o.MaxFirmwares)
			m.r.FirmwareSkipped++
			continue
		}
		for _, w := range c.b.Warnings {
			m.r.warn("Firmware %s/%s: %s", md.code, c.file, w)
		}
		at := c.mtime.UTC().Truncate(time.Microsecond)
		if m.o.DryRun {
			m.action("  [DRY RUN] Would migrate firmware: %s/%s (%s, uploaded_at %s)", md.code, v, c.file, at.Format(time.RFC3339))
			m.r.FirmwareMigrated++
			m.plan(md.code + "/" + v)
			continue
		}
		if c.replace {
			if err := m.o.Firmware.DropUnrecordedVersion(ctx, md.id, v); err != nil {
				return fmt.Errorf("replace the older service's row %s/%s: %w", md.code, v, err)
			}
		}
		dm := &devices.Model{ID: md.id, Code: md.code}
		if _, err := m.o.Firmware.Import(ctx, dm, c.b, at, false); err != nil {
			if fatal(err) {
				return fmt.Errorf("migrate firmware %s/%s: %w", md.code, v, err)
			}
			m.r.warn("Failed to migrate firmware %s/%s: %v", md.code, c.file, err)
			m.r.FirmwareSkipped++
			continue
		}
		m.action("  Migrated firmware: %s/%s (%s)", md.code, v, c.file)
		m.r.FirmwareMigrated++
		m.committed()
	}
	return nil
}

func (m *migrator) plan(k string) {
	if m.planned == nil {
		m.planned = map[string]bool{}
	}
	m.planned[k] = true
}

// fatal reports failures of the database or the store, which end the run (exit 1).
func fatal(err error) bool {
	return errors.Is(err, blob.ErrUnavailable) || errors.Is(db.Classify(err), db.ErrUnavailable) || errors.Is(err, context.Canceled)
}

func (m *migrator) open(code, path string) (*candidate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	b, err := bundle.Validate(f, fi.Size(), code, m.o.Limits, bundle.Legacy)
	if err != nil {
		f.Close()
		return nil, err
	}
	arts := map[string]firmware.ArtifactInfo{}
	for _, a := range b.Artifacts {
		arts[a.Name] = firmware.ArtifactInfo{Size: a.Size, SHA256: hex.EncodeToString(a.SHA256[:])}
	}
	return &candidate{file: filepath.Base(path), mtime: fi.ModTime(), f: f, b: b, arts: arts}, nil
}

type dumpRow struct {
	coredumps.LegacyFile
	seen bool
}

func (m *migrator) coredumps(ctx context.Context) error {
	if !m.sourceDir(m.o.CoredumpsDir, "coredumps") {
		return nil
	}
	hasFilename, err := coredumps.HasLegacyFilename(ctx, m.o.DB, m.o.DB)
	if err != nil {
		return db.Classify(err)
	}
	pending := map[string]*dumpRow{} // device_id/filename
	var order []*dumpRow
	if hasFilename {
		files, err := coredumps.LegacyFiles(ctx, m.o.DB)
		if err != nil {
			return err
		}
		for _, f := range files {
			r := &dumpRow{LegacyFile: f}
			pending[fmt.Sprintf("%d/%s", r.DeviceID, r.Filename)] = r
			order = append(order, r)
		}
	} else {
		// After our finalize the remaining files are orphans; only the older service's own
		// 007 dropped the column before its files were moved.
		var finalized int
		if err := m.o.DB.QueryRowContext(ctx, `SELECT count(*) FROM legacy_adoption WHERE finalized_at IS NOT NULL`).Scan(&finalized); err != nil {
			return db.Classify(err)
		}
		if finalized == 0 {
			m.r.warn("coredumps.filename no longer exists (the older service's revision 007 dropped it): files not already migrated cannot be matched to rows")
		}
	}
	done := map[string]bool{}
	rows, err := m.o.DB.QueryContext(ctx, `SELECT device_id, filename FROM legacy_coredump_files`)
	if err != nil {
		return db.Classify(fmt.Errorf("list migrated core dump files: %w", err))
	}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return err
		}
		done[fmt.Sprintf("%d/%s", id, name)] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return db.Classify(err)
	}
	devs, err := devices.IDsByKey(ctx, m.o.DB)
	if err != nil {
		return err
	}

	entries, err := os.ReadDir(m.o.CoredumpsDir)
	if err != nil {
		return fmt.Errorf("read COREDUMPS_DIR: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		key := e.Name()
		files, err := dumpFiles(filepath.Join(m.o.CoredumpsDir, key))
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		devID, ok := devs[key]
		if !ok {
			m.r.warn("Device directory '%s' has no matching DB record, skipping", key)
			for _, f := range files {
				m.r.Orphans = append(m.r.Orphans, key+"/"+f)
				m.r.CoredumpsSkipped++
			}
			continue
		}
		for _, name := range files {
			id := fmt.Sprintf("%d/%s", devID, name)
			if done[id] {
				m.r.CoredumpsAlready++
				continue
			}
			row, ok := pending[id]
			if !ok {
				m.r.warn("Orphaned coredump file %s/%s: no matching DB record (not uploaded)", key, name)
				m.r.Orphans = append(m.r.Orphans, key+"/"+name)
				m.r.CoredumpsSkipped++
				continue
			}
			row.seen = true
			if err := m.dump(ctx, row, filepath.Join(m.o.CoredumpsDir, key, name)); err != nil {
				return err
			}
		}
	}
	for _, r := range order {
		if !r.seen {
			m.r.MissingFiles = append(m.r.MissingFiles, fmt.Sprintf("%s/%s", r.DeviceKey, r.Filename))
			m.r.warn("Core dump %d of device %s has no file %s/%s: left unmigrated (download answers 404)", r.ID, r.DeviceKey, r.DeviceKey, r.Filename)
		}
	}
	return nil
}

func dumpFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), "coredump_") && strings.HasSuffix(e.Name(), ".dmp") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// dump moves one file: object first, then the row change in its own transaction. A crash
// between leaves the object and the row's filename; the re-run overwrites the object.
func (m *migrator) dump(ctx context.Context, r *dumpRow, path string) error {
	key := coredumps.Key(r.DeviceKey, r.ID)
	f, err := os.Open(path)
	if err != nil {
		m.r.warn("Failed to migrate coredump %s/%s: %v", r.DeviceKey, r.Filename, err)
		m.r.CoredumpsSkipped++
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		m.r.warn("Failed to migrate coredump %s/%s: %v", r.DeviceKey, r.Filename, err)
		m.r.CoredumpsSkipped++
		return nil
	}
	if fi.Size() != r.Size {
		m.r.warn("Core dump %s/%s is %d bytes but its row says %d; migrated as it is", r.DeviceKey, r.Filename, fi.Size(), r.Size)
	}
	if m.o.DryRun {
		m.action("  [DRY RUN] Would migrate coredump: %s/%s -> %s", r.DeviceKey, r.Filename, key)
		m.r.CoredumpsMigrated++
		return nil
	}
	if err := m.o.Store.Put(ctx, key, f, fi.Size(), "application/octet-stream"); err != nil {
		if fatal(err) {
			return fmt.Errorf("upload core dump %s/%s: %w", r.DeviceKey, r.Filename, err)
		}
		m.r.warn("Failed to migrate coredump %s/%s: %v", r.DeviceKey, r.Filename, err)
		m.r.CoredumpsSkipped++
		return nil
	}
	if m.o.BeforeCommit != nil {
		m.o.BeforeCommit(m.done)
	}
	err = m.o.DB.Tx(ctx, func(tx *sql.Tx) error {
		if err := coredumps.LegacyFileMovedTx(ctx, tx, r.ID, r.Filename); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO legacy_coredump_files (device_id, filename, coredump_id, migrated_at) VALUES ($1, $2, $3, $4)`,
			r.DeviceID, r.Filename, r.ID, db.Now())
		return err
	})
	if err != nil {
		return db.Classify(fmt.Errorf("record migrated core dump %s/%s: %w", r.DeviceKey, r.Filename, err))
	}
	m.action("  Migrated coredump: %s/%s -> %s", r.DeviceKey, r.Filename, key)
	m.r.CoredumpsMigrated++
	m.committed()
	return nil
}
