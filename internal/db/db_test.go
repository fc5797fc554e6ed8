package db_test

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// With every connection busy, transactions start in the order they asked for one
// (database/sql alone hands a freed connection to a random waiter). On SQLite, where every
// transaction takes the write lock, that holds with free connections too (SQLite alone
// lets waiting writers poll for the lock).
func TestTxAdmitsInArrivalOrder(t *testing.T) {
	for _, c := range []struct {
		name, url string
		conns     int
	}{
		{"sqlite", testenv.SQLiteURL(t), 0},
		{"sqlite-1-conn", testenv.SQLiteURL(t), 1},
		{"postgres-1-conn", testenv.PostgresURL(t), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			d, err := db.OpenWith(ctx, c.url, db.Options{MaxConns: c.conns})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			held, release := make(chan struct{}), make(chan struct{})
			holder := make(chan error, 1)
			go func() {
				holder <- d.Tx(ctx, func(*sql.Tx) error { close(held); <-release; return nil })
			}()
			<-held

			const n = 10
			var (
				mu    sync.Mutex
				order []int
				wg    sync.WaitGroup
			)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := d.Tx(ctx, func(tx *sql.Tx) error {
						var one int
						if err := tx.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
							return err
						}
						mu.Lock()
						order = append(order, i)
						mu.Unlock()
						return nil
					})
					if err != nil {
						t.Errorf("waiter %d: %v", i, err)
					}
				}()
				waitQueued(t, i+1) // waiters 0..i
			}

			// A waiter that gives up leaves the queue without running.
			cctx, cancel := context.WithCancel(ctx)
			gaveUp := make(chan error, 1)
			go func() {
				gaveUp <- d.Tx(cctx, func(*sql.Tx) error { t.Error("canceled waiter ran"); return nil })
			}()
			waitQueued(t, n+1)
			cancel()
			if err := <-gaveUp; !errors.Is(err, context.Canceled) {
				t.Errorf("canceled waiter: %v, want context.Canceled", err)
			}

			close(release)
			if err := <-holder; err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			for i, got := range order {
				if got != i {
					t.Fatalf("transactions ran in order %v, want 0..%d", order, n-1)
				}
			}
			if len(order) != n {
				t.Fatalf("%d of %d transactions ran", len(order), n)
			}
		})
	}
}

// waitQueued waits until n goroutines wait for their turn in DB.Tx itself (blocked in its
// select, not merely running somewhere inside it), so the next waiter queues after them.
func waitQueued(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 2000 {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			lines := strings.Split(g, "\n")
			if !strings.Contains(lines[0], "[select") {
				continue
			}
			for _, l := range lines[1:] {
				if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "runtime.") {
					continue // file:line, or the runtime's own frames
				}
				if strings.Contains(l, "/internal/db.(*DB).Tx(") {
					got++
				}
				break
			}
		}
		if got >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("fewer than %d goroutines waiting in DB.Tx after 10 s", n)
}

// A SQLite writer that waits longer than SQLite itself would for the write lock gets
// ErrUnavailable (a 503), and its transaction never runs.
func TestTxGivesUpOnALockedSQLite(t *testing.T) {
	ctx := context.Background()
	d, err := db.Open(ctx, testenv.SQLiteURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetGateWait(50 * time.Millisecond)
	held, release := make(chan struct{}), make(chan struct{})
	holder := make(chan error, 1)
	go func() {
		holder <- d.Tx(ctx, func(*sql.Tx) error { close(held); <-release; return nil })
	}()
	<-held
	err = d.Tx(ctx, func(*sql.Tx) error { t.Error("second writer ran"); return nil })
	if !errors.Is(err, db.ErrUnavailable) {
		t.Errorf("second writer: %v, want ErrUnavailable", err)
	}
	close(release)
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	if err := d.Tx(ctx, func(*sql.Tx) error { return nil }); err != nil {
		t.Errorf("after the holder committed: %v", err)
	}
}

// Connection-level failures answer 503, whatever layer reports them; query errors do not.
func TestClassifyConnectionFailures(t *testing.T) {
	for _, msg := range []string{"begin transaction: conn closed", "read: connection reset by peer", "unexpected EOF"} {
		if err := db.Classify(errors.New(msg)); !errors.Is(err, db.ErrUnavailable) {
			t.Errorf("%q: %v is not ErrUnavailable", msg, err)
		}
	}
	if err := db.Classify(errors.New("no such column: x")); errors.Is(err, db.ErrUnavailable) {
		t.Errorf("a query error became ErrUnavailable: %v", err)
	}
}
