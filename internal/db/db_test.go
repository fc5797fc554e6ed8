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
// (database/sql alone hands a freed connection to a random waiter).
func TestTxAdmitsInArrivalOrder(t *testing.T) {
	for _, c := range []struct{ name, url string }{
		{"sqlite", testenv.SQLiteURL(t)},
		{"postgres", testenv.PostgresURL(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			d, err := db.OpenWith(ctx, c.url, db.Options{MaxConns: 1})
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
				waitBlockedInTx(t, i+2) // the holder and waiters 0..i
			}

			// A waiter that gives up leaves the queue without running.
			cctx, cancel := context.WithCancel(ctx)
			gaveUp := make(chan error, 1)
			go func() {
				gaveUp <- d.Tx(cctx, func(*sql.Tx) error { t.Error("canceled waiter ran"); return nil })
			}()
			waitBlockedInTx(t, n+2)
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

// waitBlockedInTx waits until n goroutines are blocked inside DB.Tx (holding a
// transaction or waiting for one), so the next waiter queues strictly after them.
func waitBlockedInTx(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 2000 {
		stacks := string(buf[:runtime.Stack(buf, true)])
		got := 0
		for _, g := range strings.Split(stacks, "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(g, "/internal/db.(*DB).Tx(") && !strings.Contains(header, "[running") && !strings.Contains(header, "[runnable") {
				got++
			}
		}
		if got >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("fewer than %d goroutines blocked in DB.Tx after 10 s", n)
}
