package fsck_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/fsck"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// owner is an Owner of things/ whose answers the test sets.
type owner struct {
	recorded []blob.Recorded
	ownedTx  bool
	locked   int // OwnedTx calls, each inside the orphan's removal transaction
	repaired []string
}

func (o *owner) ObjectPrefix() string { return "things/" }
func (o *owner) Recorded(context.Context) (int, []blob.Recorded, error) {
	return len(o.recorded), o.recorded, nil
}
func (o *owner) Expects(_ context.Context, key string) (bool, error) {
	for _, r := range o.recorded {
		if r.Key == key {
			return true, nil
		}
	}
	return false, nil
}
func (o *owner) OwnedTx(_ context.Context, tx *sql.Tx, _ string) (bool, error) {
	if tx == nil {
		panic("OwnedTx without a transaction")
	}
	o.locked++
	return o.ownedTx, nil
}
func (o *owner) RepairMissing(_ context.Context, key string) (bool, bool, error) {
	o.repaired = append(o.repaired, key)
	return true, false, nil
}

// fsck lists only its owners' prefixes, takes keys and details from them, asks the owner
// under its lock before deleting an orphan, and leaves the repair of a row to its owner.
func TestOwnersAnswerForTheirObjects(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		s := env.Store
		put(t, s, "things/a", []byte("abc"))
		put(t, s, "things/folder/x", []byte("x"))
		put(t, s, "things/stray", []byte("stray"))
		put(t, s, "elsewhere/stray", []byte("not fsck's"))
		o := &owner{recorded: []blob.Recorded{
			{Key: "things/a", Size: 3, SHA256: sum([]byte("abc"))},
			{Key: "things/folder/main", Size: -1, Folder: true, Missing: "thing folder has no main"},
			{Key: "things/pending", Size: 10, Pending: true},
			{Key: "things/settled", Size: 10, Settled: true},
		}}
		c := fsck.New(env.DB, s, o)
		c.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
		rep, err := c.Check(ctx, fsck.Options{Grace: 0})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Objects != 3 || rep.Rows != 4 || rep.Hashed != 1 || rep.Marked != 1 || len(rep.Findings) != 2 {
			t.Fatalf("report: %+v", rep)
		}
		if f := rep.Findings[0]; f.Kind != fsck.Dangling || f.Key != "things/folder/main" || f.Detail != "thing folder has no main" {
			t.Fatalf("dangling: %+v", f)
		}
		if f := rep.Findings[1]; f.Kind != fsck.Orphan || f.Key != "things/stray" {
			t.Fatalf("orphan: %+v", f)
		}
		// An owner that claims the orphan under its lock (an upload committed meanwhile) keeps it.
		o.ownedTx = true
		if err := c.Repair(ctx, rep, fsck.Options{Grace: 0}); err != nil {
			t.Fatal(err)
		}
		if rep.Findings[1].Repaired || o.locked != 1 {
			t.Fatalf("owned orphan: %+v, %d owner checks", rep.Findings[1], o.locked)
		}
		if _, err := s.Stat(ctx, "things/stray"); err != nil {
			t.Fatalf("owned orphan deleted: %v", err)
		}
		if len(o.repaired) != 1 || o.repaired[0] != "things/folder/main" || !rep.Findings[0].Repaired {
			t.Fatalf("dangling row not repaired by its owner: %v %+v", o.repaired, rep.Findings[0])
		}
		o.ownedTx = false
		if err := c.Repair(ctx, rep, fsck.Options{Grace: 0}); err != nil {
			t.Fatal(err)
		}
		if !rep.Findings[1].Repaired || rep.Remaining != 0 {
			t.Fatalf("orphan not removed: %+v", rep)
		}
		if _, err := s.Stat(ctx, "things/stray"); err == nil {
			t.Fatal("orphan still stored")
		}
		if _, err := s.Stat(ctx, "elsewhere/stray"); err != nil {
			t.Fatalf("an object outside every owner's prefix was touched: %v", err)
		}
	})
}
