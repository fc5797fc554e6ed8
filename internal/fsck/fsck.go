// Package fsck reconciles object storage with the database (docs/ARCHITECTURE.md, consistency rule 4).
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
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

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

	owner Owner // the owner of a dangling row's key
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

// Owner is a package that owns the rows recording the objects under one prefix of the
// store (firmware, core dumps). Keys and their layout are the owner's: fsck never builds
// or parses them.
type Owner interface {
	// ObjectPrefix is the folder of its objects ("firmware/").
	ObjectPrefix() string
	// Recorded returns how many rows it has and the objects they expect.
	Recorded(ctx context.Context) (rows int, objs []blob.Recorded, err error)
	// Expects reports whether a row still expects the object at key (and has not
	// recorded it missing): the fresh look-up before a missing object is reported.
	Expects(ctx context.Context, key string) (bool, error)
	// OwnedTx reports whether a row owns key, after locking in tx the parent row that
	// writers of such keys lock, so no owner appears before tx ends.
	OwnedTx(ctx context.Context, tx *sql.Tx, key string) (bool, error)
	// RepairMissing fixes the row whose object at key is gone, unless the object is
	// back; unrepairable means it must stay as it is (a model's current firmware).
	RepairMissing(ctx context.Context, key string) (repaired, unrepairable bool, err error)
}

// Checker runs checks and repairs.
type Checker struct {
	DB     *db.DB
	Store  blob.Store
	Now    func() time.Time
	owners []Owner
}

// New returns a checker over the objects of the owners (each listed under its prefix).
func New(d *db.DB, store blob.Store, owners ...Owner) *Checker {
	return &Checker{DB: d, Store: store, Now: time.Now, owners: owners}
}

// ownerOf returns the owner whose prefix holds key, or nil.
func (c *Checker) ownerOf(key string) Owner {
	for _, o := range c.owners {
		if strings.HasPrefix(key, o.ObjectPrefix()) {
			return o
		}
	}
	return nil
}

type expect struct {
	obj   blob.Recorded
	owner Owner
}

// recorded asks every owner for its rows' objects.
func (c *Checker) recorded(ctx context.Context) (rows int, objs []expect, err error) {
	for _, o := range c.owners {
		n, rs, err := o.Recorded(ctx)
		if err != nil {
			return 0, nil, err
		}
		rows += n
		for _, r := range rs {
			objs = append(objs, expect{obj: r, owner: o})
		}
	}
	return rows, objs, nil
}

// Check compares objects and rows. Rows are read before the listing and suspects are
// re-checked afterwards, so uploads and deletions running meanwhile are not reported.
func (c *Checker) Check(ctx context.Context, opts Options) (*Report, error) {
	now := c.Now().UTC()
	rep := &Report{CheckedAt: now, Grace: opts.Grace.String(), Counts: Counts{}}
	rows, objs, err := c.recorded(ctx)
	if err != nil {
		return nil, err
	}
	rep.Rows = rows
	want := map[string]expect{}
	folders := map[string]bool{} // rows that own every object in a folder
	for _, e := range objs {
		if e.obj.Pending {
			continue // still a file of the older service; migrate-to-s3 moves it
		}
		if e.obj.Settled {
			rep.Marked++
		}
		if e.obj.Folder {
			folders[parentPrefix(e.obj.Key)] = true
		}
		want[e.obj.Key] = e
	}
	seen := map[string]bool{}
	var orphanSuspects []blob.Info
	for _, o := range c.owners {
		prefix := o.ObjectPrefix()
		err := blob.Walk(ctx, c.Store, prefix, func(it blob.Info) error {
			rep.Objects++
			e, ok := want[it.Key]
			if !ok {
				if !folders[parentPrefix(it.Key)] {
					orphanSuspects = append(orphanSuspects, it)
				}
				return nil
			}
			seen[it.Key] = true
			if e.obj.Settled || e.obj.Size < 0 {
				return nil // nothing recorded to compare
			}
			f := Finding{Key: it.Key}
			if it.Size != e.obj.Size {
				f.Kind, f.Detail = SizeMismatch, fmt.Sprintf("object has %d bytes, row records %d", it.Size, e.obj.Size)
				rep.Findings = append(rep.Findings, f)
				return nil
			}
			if opts.SkipHash || e.obj.SHA256 == "" {
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
			if !strings.EqualFold(got, e.obj.SHA256) {
				f.Kind, f.Detail = SHA256Mismatch, fmt.Sprintf("object SHA-256 %s, row records %s", got, e.obj.SHA256)
				rep.Findings = append(rep.Findings, f)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
	}
	// The outbox is read after the listing: a deletion queued meanwhile covers its objects.
	dels, err := outbox.Deletions(ctx, c.DB)
	if err != nil {
		return nil, err
	}
	rep.Outbox = len(dels)
	for _, d := range dels {
		if now.Sub(d.QueuedAt) > opts.Grace {
			rep.Findings = append(rep.Findings, Finding{Kind: StuckOutbox, Key: d.Key,
				Detail: fmt.Sprintf("queued for deletion since %s", d.QueuedAt.Format(time.RFC3339))})
		}
	}
	// Orphans: rows read again now, so a row committed during the listing is not missed.
	if len(orphanSuspects) > 0 {
		_, objs2, err := c.recorded(ctx)
		if err != nil {
			return nil, err
		}
		owned := map[string]bool{}
		for _, e := range objs2 {
			owned[e.obj.Key] = true
			if e.obj.Folder {
				owned[parentPrefix(e.obj.Key)] = true
			}
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
		if seen[key] || e.obj.Settled {
			continue
		}
		exists, err := e.owner.Expects(ctx, key)
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
		rep.Findings = append(rep.Findings, Finding{Kind: Dangling, Key: key, Detail: e.obj.Missing, owner: e.owner})
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

func covered(dels []outbox.Deletion, key string) bool {
	for _, d := range dels {
		if d.Covers(key) {
			return true
		}
	}
	return false
}

func parentPrefix(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i+1]
	}
	return ""
}

// Repair fixes what a check found: orphans older than the grace period are deleted (each
// re-checked under the owner's lock so a concurrent upload reusing the key keeps its
// object); dangling rows are repaired by their owner (core dumps become ERROR with kind
// missing_object; firmware versions leave the history, their remaining objects through
// the outbox, unless current, which stays a finding marked Unrepairable). Mismatches and
// stuck outbox entries are reported, not changed. The report's counts are updated in place.
func (c *Checker) Repair(ctx context.Context, rep *Report, opts Options) error {
	for i := range rep.Findings {
		f := &rep.Findings[i]
		var err error
		switch f.Kind {
		case Orphan:
			f.Repaired, err = c.removeOrphan(ctx, f.Key, opts.Grace)
		case Dangling:
			if f.owner != nil {
				f.Repaired, f.Unrepairable, err = f.owner.RepairMissing(ctx, f.Key)
			}
		}
		if err != nil {
			return fmt.Errorf("repair %s %s: %w", f.Kind, f.Key, err)
		}
	}
	rep.finish()
	return nil
}

// removeOrphan deletes an orphan inside a transaction in which its owner holds the lock
// that uploads take (a row lock on PostgreSQL, the database write lock on SQLite), after
// confirming that no row owns it, no deletion is queued and it is still old.
func (c *Checker) removeOrphan(ctx context.Context, key string, grace time.Duration) (bool, error) {
	done := false
	err := c.DB.Tx(ctx, func(tx *sql.Tx) error {
		if o := c.ownerOf(key); o != nil {
			owned, err := o.OwnedTx(ctx, tx, key)
			if err != nil || owned {
				return err
			}
		}
		if queued, err := outbox.Queued(ctx, tx, key); err != nil || queued {
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
