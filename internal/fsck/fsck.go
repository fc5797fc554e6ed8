// Package fsck reconciles object storage with the database (DESIGN.md consistency rule 4).
// Check lists every object under firmware/ and coredumps/ and compares it with the rows:
// orphan objects (no row, older than a grace period), dangling rows (a row whose object is
// missing), size or SHA-256 mismatches against the recorded values, and outbox entries stuck
// for longer than the grace period. Repair deletes orphans and marks dangling rows.
package fsck

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// KindMissingObject is the parse_error kind of a core dump whose object is gone
// (the same kind the decoder records when it finds the object missing).
const KindMissingObject = "missing_object"

// Finding kinds, also the label values of the iotsupport_fsck_findings gauge.
const (
	Orphan         = "orphan"          // object without a row, older than the grace period
	Dangling       = "dangling"        // row whose object is missing
	SizeMismatch   = "size_mismatch"   // object size differs from the recorded size
	SHA256Mismatch = "sha256_mismatch" // object content differs from the recorded SHA-256
	StuckOutbox    = "stuck_outbox"    // queued deletion older than the grace period
)

// Kinds lists every finding kind.
var Kinds = []string{Orphan, Dangling, SizeMismatch, SHA256Mismatch, StuckOutbox}

// Finding is one problem.
type Finding struct {
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Detail string `json:"detail,omitempty"`
	// Repaired is set by Repair when the problem was fixed.
	Repaired bool `json:"repaired,omitempty"`
	// Unrepairable is set by Repair when the problem cannot be fixed automatically
	// (e.g. the current firmware version of a model lost an object).
	Unrepairable bool `json:"unrepairable,omitempty"`

	table string // "coredumps" or "firmware_versions" for dangling rows and mismatches
	id    int64
	code  string // model code (firmware) or device key (core dumps)
	ver   string // firmware version
}

// Report is the outcome of a check.
type Report struct {
	CheckedAt time.Time `json:"checked_at"`
	Grace     string    `json:"grace"`
	Objects   int       `json:"objects"`   // objects listed under firmware/ and coredumps/
	Rows      int       `json:"rows"`      // firmware versions and core dumps
	Hashed    int       `json:"hashed"`    // objects whose SHA-256 was computed
	Recent    int       `json:"recent"`    // objects without a row younger than the grace period (uploads in flight)
	Queued    int       `json:"queued"`    // objects without a row covered by a queued deletion
	Marked    int       `json:"marked"`    // core dumps already marked ERROR/missing_object (repaired earlier)
	Outbox    int       `json:"outbox"`    // queued deletions
	Findings  []Finding `json:"findings"`  // problems, sorted by kind and key
	Counts    Counts    `json:"counts"`    // findings by kind
	Remaining int       `json:"remaining"` // findings not repaired
}

// Counts are findings by kind.
type Counts map[string]int

// Clean reports whether no problem remains.
func (r *Report) Clean() bool { return r.Remaining == 0 }

// Options tune a check.
type Options struct {
	Grace time.Duration
	// SkipHash compares sizes only (no object is read).
	SkipHash bool
}

// Checker runs checks and repairs.
type Checker struct {
	DB    *db.DB
	Store blob.Store
	Now   func() time.Time
}

// New returns a checker.
func New(d *db.DB, store blob.Store) *Checker {
	return &Checker{DB: d, Store: store, Now: time.Now}
}

type fwRow struct {
	id        int64
	code, ver string
	arts      map[string]artInfo // nil: adopted version without recorded artifacts
	current   bool
}

type artInfo struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type dumpRow struct {
	id         int64
	deviceKey  string
	size       int64
	sha        string
	marked     bool
	legacyFile bool
}

type deletion struct {
	key    string
	prefix bool
	at     time.Time
}

// Check compares objects and rows. Rows are read before the listing and suspects are
// re-checked afterwards, so uploads and deletions running meanwhile are not reported.
func (c *Checker) Check(ctx context.Context, opts Options) (*Report, error) {
	now := c.Now().UTC()
	rep := &Report{CheckedAt: now, Grace: opts.Grace.String(), Counts: Counts{}}
	fws, dumps, err := c.rows(ctx)
	if err != nil {
		return nil, err
	}
	rep.Rows = len(fws) + len(dumps)
	// Expected objects by key.
	type expect struct {
		fw   *fwRow
		dump *dumpRow
		art  string
	}
	want := map[string]expect{}
	fwPrefixes := map[string]*fwRow{} // adopted versions: any object under the folder belongs to them
	for _, f := range fws {
		if f.arts == nil {
			fwPrefixes[fwPrefix(f.code, f.ver)] = f
			want[fwPrefix(f.code, f.ver)+"firmware.bin"] = expect{fw: f, art: "firmware.bin"}
			continue
		}
		for name := range f.arts {
			want[fwPrefix(f.code, f.ver)+name] = expect{fw: f, art: name}
		}
	}
	for _, d := range dumps {
		if d.legacyFile {
			continue // still a file of the older service; migrate-to-s3 moves it
		}
		if d.marked {
			rep.Marked++
		}
		want[dumpKey(d.deviceKey, d.id)] = expect{dump: d}
	}
	seen := map[string]bool{}
	var orphanSuspects []blob.Info
	for _, prefix := range []string{"firmware/", "coredumps/"} {
		err := blob.Walk(ctx, c.Store, prefix, func(it blob.Info) error {
			rep.Objects++
			e, ok := want[it.Key]
			if !ok {
				if f := fwPrefixes[parentPrefix(it.Key)]; f != nil {
					return nil
				}
				orphanSuspects = append(orphanSuspects, it)
				return nil
			}
			seen[it.Key] = true
			var size int64
			var sum string
			switch {
			case e.dump != nil:
				if e.dump.marked {
					return nil
				}
				size, sum = e.dump.size, e.dump.sha
			case e.fw.arts != nil:
				a := e.fw.arts[e.art]
				size, sum = a.Size, a.SHA256
			default:
				return nil // adopted firmware: nothing recorded to compare
			}
			f := Finding{Key: it.Key}
			if e.dump != nil {
				f.table, f.id, f.code = "coredumps", e.dump.id, e.dump.deviceKey
			} else {
				f.table, f.id, f.code, f.ver = "firmware_versions", e.fw.id, e.fw.code, e.fw.ver
			}
			if it.Size != size {
				f.Kind, f.Detail = SizeMismatch, fmt.Sprintf("object has %d bytes, row records %d", it.Size, size)
				rep.Findings = append(rep.Findings, f)
				return nil
			}
			if opts.SkipHash || sum == "" {
				return nil
			}
			got, err := c.hash(ctx, it.Key)
			if errors.Is(err, blob.ErrNotFound) {
				delete(seen, it.Key) // deleted meanwhile; re-checked with the dangling suspects
				return nil
			}
			if err != nil {
				return err
			}
			rep.Hashed++
			if !strings.EqualFold(got, sum) {
				f.Kind, f.Detail = SHA256Mismatch, fmt.Sprintf("object SHA-256 %s, row records %s", got, sum)
				rep.Findings = append(rep.Findings, f)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
	}
	// The outbox is read after the listing: a deletion queued meanwhile covers its objects.
	dels, err := c.deletions(ctx)
	if err != nil {
		return nil, err
	}
	rep.Outbox = len(dels)
	for _, d := range dels {
		if now.Sub(d.at) > opts.Grace {
			rep.Findings = append(rep.Findings, Finding{Kind: StuckOutbox, Key: d.key,
				Detail: fmt.Sprintf("queued for deletion since %s", d.at.Format(time.RFC3339))})
		}
	}
	// Orphans: rows read again now, so a row committed during the listing is not missed.
	if len(orphanSuspects) > 0 {
		fws2, dumps2, err := c.rows(ctx)
		if err != nil {
			return nil, err
		}
		owned := map[string]bool{}
		for _, f := range fws2 {
			if f.arts == nil {
				owned[fwPrefix(f.code, f.ver)] = true
			}
			for name := range f.arts {
				owned[fwPrefix(f.code, f.ver)+name] = true
			}
		}
		for _, d := range dumps2 {
			owned[dumpKey(d.deviceKey, d.id)] = true
		}
		for _, it := range orphanSuspects {
			switch {
			case owned[it.Key] || owned[parentPrefix(it.Key)]:
			case covered(dels, it.Key):
				rep.Queued++
			case now.Sub(it.ModTime) <= opts.Grace:
				rep.Recent++
			default:
				rep.Findings = append(rep.Findings, Finding{Kind: Orphan, Key: it.Key,
					Detail: fmt.Sprintf("%d bytes, written %s, no row", it.Size, it.ModTime.UTC().Format(time.RFC3339))})
			}
		}
	}
	// Dangling rows: each suspect is confirmed with a fresh row lookup and a Stat.
	for key, e := range want {
		if seen[key] {
			continue
		}
		if e.dump != nil && e.dump.marked {
			continue
		}
		exists, err := c.rowExists(ctx, e.fw, e.dump)
		if err != nil {
			return nil, err
		}
		if !exists {
			continue
		}
		if _, err := c.Store.Stat(ctx, key); err == nil {
			continue
		} else if !errors.Is(err, blob.ErrNotFound) {
			return nil, fmt.Errorf("stat %s: %w", key, err)
		}
		f := Finding{Kind: Dangling, Key: key}
		if e.dump != nil {
			f.table, f.id, f.code = "coredumps", e.dump.id, e.dump.deviceKey
			f.Detail = fmt.Sprintf("core dump %d has no object", e.dump.id)
		} else {
			f.table, f.id, f.code, f.ver = "firmware_versions", e.fw.id, e.fw.code, e.fw.ver
			f.Detail = fmt.Sprintf("firmware %s %s has no %s", e.fw.code, e.fw.ver, e.art)
			if e.fw.current {
				f.Detail += " (current version)"
			}
		}
		rep.Findings = append(rep.Findings, f)
	}
	rep.finish()
	return rep, nil
}

func (r *Report) finish() {
	sort.Slice(r.Findings, func(i, j int) bool {
		if r.Findings[i].Kind != r.Findings[j].Kind {
			return r.Findings[i].Kind < r.Findings[j].Kind
		}
		return r.Findings[i].Key < r.Findings[j].Key
	})
	r.Counts = Counts{}
	for _, k := range Kinds {
		r.Counts[k] = 0
	}
	r.Remaining = 0
	for _, f := range r.Findings {
		r.Counts[f.Kind]++
		if !f.Repaired {
			r.Remaining++
		}
	}
}

func (c *Checker) hash(ctx context.Context, key string) (string, error) {
	rc, _, err := c.Store.Get(ctx, key, nil)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (c *Checker) rows(ctx context.Context) ([]*fwRow, []*dumpRow, error) {
	var fws []*fwRow
	rows, err := c.DB.QueryContext(ctx, `SELECT fv.id, m.code, fv.version, COALESCE(fv.artifacts, ''),
		CASE WHEN m.firmware_version = fv.version THEN 1 ELSE 0 END
		FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id`)
	if err != nil {
		return nil, nil, fmt.Errorf("read firmware versions: %w", db.Classify(err))
	}
	for rows.Next() {
		f := &fwRow{}
		var arts string
		var cur int
		if err := rows.Scan(&f.id, &f.code, &f.ver, &arts, &cur); err != nil {
			rows.Close()
			return nil, nil, err
		}
		f.current = cur == 1
		if arts != "" {
			if err := json.Unmarshal([]byte(arts), &f.arts); err != nil {
				f.arts = nil
			}
		}
		fws = append(fws, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, db.Classify(err)
	}
	legacy := c.hasLegacyFilename(ctx)
	q := `SELECT c.id, d.key, c.size, COALESCE(c.sha256, ''), c.parse_status, COALESCE(c.parse_error, ''), `
	if legacy {
		q += `c.filename IS NOT NULL`
	} else {
		q += `false`
	}
	q += ` FROM coredumps c JOIN devices d ON d.id = c.device_id`
	rows, err = c.DB.QueryContext(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("read core dumps: %w", db.Classify(err))
	}
	defer rows.Close()
	var dumps []*dumpRow
	for rows.Next() {
		d := &dumpRow{}
		var status, kind string
		if err := rows.Scan(&d.id, &d.deviceKey, &d.size, &d.sha, &status, &kind, &d.legacyFile); err != nil {
			return nil, nil, err
		}
		d.marked = status == "ERROR" && kind == KindMissingObject
		dumps = append(dumps, d)
	}
	return fws, dumps, db.Classify(rows.Err())
}

// hasLegacyFilename reports whether coredumps still has the older service's filename column.
func (c *Checker) hasLegacyFilename(ctx context.Context) bool {
	rows, err := c.DB.QueryContext(ctx, `SELECT filename FROM coredumps WHERE 1 = 0`)
	if err != nil {
		return false
	}
	rows.Close()
	return true
}

func (c *Checker) rowExists(ctx context.Context, f *fwRow, d *dumpRow) (bool, error) {
	var n int
	var err error
	if d != nil {
		err = c.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps WHERE id = $1 AND NOT (parse_status = 'ERROR' AND COALESCE(parse_error, '') = $2)`,
			d.id, KindMissingObject).Scan(&n)
	} else {
		err = c.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions WHERE id = $1`, f.id).Scan(&n)
	}
	return n > 0, db.Classify(err)
}

func (c *Checker) deletions(ctx context.Context) ([]deletion, error) {
	rows, err := c.DB.QueryContext(ctx, `SELECT key, is_prefix, created_at FROM blob_deletions`)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", db.Classify(err))
	}
	defer rows.Close()
	var out []deletion
	for rows.Next() {
		var d deletion
		if err := rows.Scan(&d.key, &d.prefix, &d.at); err != nil {
			return nil, err
		}
		d.at = d.at.UTC()
		out = append(out, d)
	}
	return out, db.Classify(rows.Err())
}

func covered(dels []deletion, key string) bool {
	for _, d := range dels {
		if d.key == key || (d.prefix && strings.HasPrefix(key, d.key)) {
			return true
		}
	}
	return false
}

func fwPrefix(code, ver string) string { return "firmware/" + code + "/" + ver + "/" }
func dumpKey(deviceKey string, id int64) string {
	return "coredumps/" + deviceKey + "/" + strconv.FormatInt(id, 10) + ".dmp"
}

func parentPrefix(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i+1]
	}
	return ""
}

// Repair fixes what a check found: orphans older than the grace period are deleted (each
// re-checked under the owner's lock so a concurrent upload reusing the key keeps its
// object); dangling core dumps become ERROR with kind missing_object; dangling firmware
// versions leave the history (their remaining objects go through the outbox) unless they
// are current, which stays a finding marked Unrepairable. Mismatches and stuck outbox
// entries are reported, not changed. The report's counts are updated in place.
func (c *Checker) Repair(ctx context.Context, rep *Report, opts Options) error {
	for i := range rep.Findings {
		f := &rep.Findings[i]
		var err error
		switch f.Kind {
		case Orphan:
			f.Repaired, err = c.removeOrphan(ctx, f.Key, opts.Grace)
		case Dangling:
			if f.table == "coredumps" {
				f.Repaired, err = c.markDump(ctx, f.id, f.Key)
			} else {
				f.Repaired, f.Unrepairable, err = c.dropVersion(ctx, f)
			}
		}
		if err != nil {
			return fmt.Errorf("repair %s %s: %w", f.Kind, f.Key, err)
		}
	}
	rep.finish()
	return nil
}

// removeOrphan deletes an orphan inside a transaction that holds the owner's row lock
// (PostgreSQL) or the database write lock (SQLite), the same locks uploads take, after
// confirming that no row owns it, no deletion is queued and it is still old.
func (c *Checker) removeOrphan(ctx context.Context, key string, grace time.Duration) (bool, error) {
	done := false
	err := c.DB.Tx(ctx, func(tx *sql.Tx) error {
		parts := strings.Split(key, "/")
		if c.DB.Dialect == db.Postgres && len(parts) >= 3 {
			switch parts[0] {
			case "firmware":
				if _, err := tx.ExecContext(ctx, `SELECT id FROM device_models WHERE code = $1 FOR UPDATE`, parts[1]); err != nil {
					return err
				}
			case "coredumps":
				if _, err := tx.ExecContext(ctx, `SELECT id FROM devices WHERE key = $1 FOR UPDATE`, parts[1]); err != nil {
					return err
				}
			}
		}
		owned, err := ownedTx(ctx, tx, key)
		if err != nil || owned {
			return err
		}
		st, err := c.Store.Stat(ctx, key)
		if errors.Is(err, blob.ErrNotFound) {
			done = true
			return nil
		}
		if err != nil {
			return err
		}
		if c.Now().Sub(st.ModTime) <= grace {
			return nil
		}
		if err := c.Store.Delete(ctx, key); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

// ownedTx reports whether a row or a queued deletion accounts for key.
func ownedTx(ctx context.Context, tx *sql.Tx, key string) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_deletions WHERE key = $1
		OR (is_prefix AND substr(CAST($1 AS TEXT), 1, length(key)) = key)`, key).Scan(&n); err != nil || n > 0 {
		return n > 0, err
	}
	parts := strings.Split(key, "/")
	if len(parts) != 3 && len(parts) != 4 {
		return false, nil
	}
	switch {
	case parts[0] == "coredumps" && len(parts) == 3:
		id, err := strconv.ParseInt(strings.TrimSuffix(parts[2], ".dmp"), 10, 64)
		if err != nil || !strings.HasSuffix(parts[2], ".dmp") {
			return false, nil
		}
		err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps c JOIN devices d ON d.id = c.device_id
			WHERE c.id = $1 AND d.key = $2`, id, parts[1]).Scan(&n)
		return n > 0, err
	case parts[0] == "firmware" && len(parts) == 4:
		var arts sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT fv.artifacts FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id
			WHERE m.code = $1 AND fv.version = $2`, parts[1], parts[2]).Scan(&arts)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !arts.Valid || arts.String == "" {
			return true, nil
		}
		var m map[string]artInfo
		if json.Unmarshal([]byte(arts.String), &m) != nil {
			return true, nil
		}
		_, ok := m[parts[3]]
		return ok, nil
	}
	return false, nil
}

func (c *Checker) markDump(ctx context.Context, id int64, key string) (bool, error) {
	if _, err := c.Store.Stat(ctx, key); err == nil {
		return false, nil // the object is back (written meanwhile)
	} else if !errors.Is(err, blob.ErrNotFound) {
		return false, err
	}
	now := db.Now()
	res, err := c.DB.ExecContext(ctx, `UPDATE coredumps SET parse_status = 'ERROR', parse_error = $1, parsed_output = $2,
		parsed_at = $3, updated_at = $3 WHERE id = $4`, KindMissingObject,
		"fsck: the stored core dump object is missing", now, id)
	if err != nil {
		return false, db.Classify(err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// dropVersion removes a dangling firmware version from the history (rule 2: its remaining
// objects are queued), unless it is the model's current version.
func (c *Checker) dropVersion(ctx context.Context, f *Finding) (repaired, unrepairable bool, err error) {
	err = c.DB.Tx(ctx, func(tx *sql.Tx) error {
		lock := ""
		if c.DB.Dialect == db.Postgres {
			lock = " FOR UPDATE"
		}
		var cur sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT m.firmware_version FROM device_models m JOIN firmware_versions fv ON fv.device_model_id = m.id
			WHERE fv.id = $1`+lock, f.id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			repaired = true // gone meanwhile
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Valid && cur.String == f.ver {
			unrepairable = true
			return nil
		}
		if _, err := c.Store.Stat(ctx, f.Key); err == nil {
			return nil // written meanwhile
		} else if !errors.Is(err, blob.ErrNotFound) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_versions WHERE id = $1`, f.id); err != nil {
			return err
		}
		repaired = true
		return outbox.EnqueuePrefix(ctx, tx, fwPrefix(f.code, f.ver))
	})
	return repaired, unrepairable, err
}
