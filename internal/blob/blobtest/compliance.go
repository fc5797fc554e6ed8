// Package blobtest holds the one compliance suite every blob.Store backend passes.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// Run exercises a fresh, empty store from newStore against the Store contract.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	ctx := context.Background()
	t.Run("RoundTripAndOverwrite", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "a/b/obj.bin", []byte("first version"))
		if got := get(t, s, "a/b/obj.bin", nil); string(got) != "first version" {
			t.Fatalf("got %q", got)
		}
		st1, err := s.Stat(ctx, "a/b/obj.bin")
		if err != nil || st1.Size != 13 || st1.Key != "a/b/obj.bin" || st1.ETag == "" {
			t.Fatalf("stat %+v %v", st1, err)
		}
		if d := time.Since(st1.ModTime); d < -time.Minute || d > time.Minute {
			t.Fatalf("modtime %v", st1.ModTime)
		}
		time.Sleep(10 * time.Millisecond)
		put(t, s, "a/b/obj.bin", []byte("second, longer version"))
		if got := get(t, s, "a/b/obj.bin", nil); string(got) != "second, longer version" {
			t.Fatalf("after overwrite got %q", got)
		}
		st2, _ := s.Stat(ctx, "a/b/obj.bin")
		if st2.Size != 22 || st2.ETag == st1.ETag {
			t.Fatalf("overwrite stat %+v vs %+v", st2, st1)
		}
		put(t, s, "empty", nil)
		if got := get(t, s, "empty", nil); len(got) != 0 {
			t.Fatalf("empty object: %q", got)
		}
	})
	t.Run("Ranges", func(t *testing.T) {
		s := newStore(t)
		data := make([]byte, 100000)
		_, _ = rand.Read(data)
		put(t, s, "r/data", data)
		cases := []struct {
			rng  blob.Range
			want []byte
		}{
			{blob.Range{Offset: 0, Length: 10}, data[:10]},
			{blob.Range{Offset: 4096, Length: 4096}, data[4096:8192]},
			{blob.Range{Offset: 99990, Length: 10}, data[99990:]},
			{blob.Range{Offset: 99990, Length: 1000}, data[99990:]},
			{blob.Range{Offset: 50000, Length: -1}, data[50000:]},
		}
		for _, c := range cases {
			rc, info, err := s.Get(ctx, "r/data", &c.rng)
			if err != nil {
				t.Fatalf("range %+v: %v", c.rng, err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, c.want) || info.Size != int64(len(data)) {
				t.Fatalf("range %+v: %d bytes (want %d), size %d", c.rng, len(got), len(c.want), info.Size)
			}
		}
		if _, _, err := s.Get(ctx, "r/data", &blob.Range{Offset: 100000, Length: 5}); !errors.Is(err, blob.ErrInvalidRange) {
			t.Fatalf("range past the end: %v", err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.Get(ctx, "no/such", nil); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("get missing: %v", err)
		}
		if _, err := s.Stat(ctx, "no/such"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat missing: %v", err)
		}
		if err := s.Delete(ctx, "no/such"); err != nil {
			t.Fatalf("delete missing: %v", err)
		}
		put(t, s, "x/y", []byte("1"))
		if err := s.Delete(ctx, "x/y"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "x/y"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat deleted: %v", err)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("check: %v", err)
		}
	})
	t.Run("ListPagination", func(t *testing.T) {
		s := newStore(t)
		const n = 1100
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				b := []byte(fmt.Sprint(i))
				errs <- s.Put(ctx, fmt.Sprintf("many/%05d.dmp", i), bytes.NewReader(b), int64(len(b)), "")
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		put(t, s, "other/x", []byte("x"))
		put(t, s, "manyx", []byte("x"))
		page, more, err := s.List(ctx, "many/", "", 1000)
		if err != nil || len(page) != 1000 || !more || page[0].Key != "many/00000.dmp" || page[999].Key != "many/00999.dmp" {
			t.Fatalf("first page: %d items, more=%v, err=%v", len(page), more, err)
		}
		page2, more, err := s.List(ctx, "many/", page[999].Key, 1000)
		if err != nil || len(page2) != 100 || more || page2[0].Key != "many/01000.dmp" {
			t.Fatalf("second page: %d items, more=%v, err=%v", len(page2), more, err)
		}
		count := 0
		prev := ""
		if err := blob.Walk(ctx, s, "many/", func(i blob.Info) error {
			if i.Key <= prev {
				return fmt.Errorf("order: %s after %s", i.Key, prev)
			}
			prev = i.Key
			count++
			return nil
		}); err != nil || count != n {
			t.Fatalf("walk: %d, %v", count, err)
		}
		deleted, err := blob.DeletePrefix(ctx, s, "many/")
		if err != nil || deleted != n {
			t.Fatalf("delete prefix: %d %v", deleted, err)
		}
		rest, _, _ := s.List(ctx, "", "", 1000)
		if len(rest) != 2 || rest[0].Key != "manyx" || rest[1].Key != "other/x" {
			t.Fatalf("after delete prefix: %+v", rest)
		}
	})
	t.Run("KeyValidation", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"", "../x", "a/../../x", "/abs", "a//b", "a/./b", "a/", "nul\x00", "tab\tkey", `back\slash`} {
			if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1, ""); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("put %q: %v", k, err)
			}
			if _, _, err := s.Get(ctx, k, nil); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("get %q: %v", k, err)
			}
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("stat %q: %v", k, err)
			}
			if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("delete %q: %v", k, err)
			}
		}
		if _, _, err := s.List(ctx, "../", "", 10); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("list ../: %v", err)
		}
	})
	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "keep", []byte("old"))
		r := io.MultiReader(bytes.NewReader([]byte("partial")), errReader{})
		if err := s.Put(ctx, "broken", r, 100, ""); err == nil {
			t.Fatal("put with failing reader succeeded")
		}
		if err := s.Put(ctx, "keep", io.MultiReader(bytes.NewReader([]byte("new")), errReader{}), 100, ""); err == nil {
			t.Fatal("overwrite with failing reader succeeded")
		}
		if err := s.Put(ctx, "short", bytes.NewReader([]byte("abc")), 10, ""); err == nil {
			t.Fatal("short body accepted")
		}
		for _, k := range []string{"broken", "short"} {
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("%s exists after failed put: %v", k, err)
			}
		}
		if got := get(t, s, "keep", nil); string(got) != "old" {
			t.Fatalf("failed overwrite changed the object: %q", got)
		}
		items, _, _ := s.List(ctx, "", "", 100)
		if len(items) != 1 {
			t.Fatalf("listing after failed puts: %+v", items)
		}
	})
	t.Run("ConcurrentOverwrites", func(t *testing.T) {
		s := newStore(t)
		vals := make([][]byte, 8)
		for i := range vals {
			vals[i] = bytes.Repeat([]byte{byte('a' + i)}, 64*1024)
		}
		var wg sync.WaitGroup
		for _, v := range vals {
			wg.Add(1)
			go func(v []byte) {
				defer wg.Done()
				_ = s.Put(ctx, "same/key", bytes.NewReader(v), int64(len(v)), "")
			}(v)
		}
		wg.Wait()
		got := get(t, s, "same/key", nil)
		whole := false
		for _, v := range vals {
			whole = whole || bytes.Equal(got, v)
		}
		if !whole {
			t.Fatalf("object is a mix of concurrent writes (%d bytes)", len(got))
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("reader failed") }

func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), "application/octet-stream"); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func get(t *testing.T, s blob.Store, key string, rng *blob.Range) []byte {
	t.Helper()
	rc, _, err := s.Get(context.Background(), key, rng)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}
