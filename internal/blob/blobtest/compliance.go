// Package blobtest holds the one compliance suite every blob.Store backend passes.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// RunCompliance checks the blob.Store contract on fresh, empty stores from newStore.
func RunCompliance(t *testing.T, newStore func(t *testing.T) blob.Store) {
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
		if d := time.Since(st1.ModTime); d < -time.Minute || d > time.Minute || st1.ModTime.Location() != time.UTC {
			t.Fatalf("modtime %v", st1.ModTime)
		}
		rc, gi, err := s.Get(ctx, "a/b/obj.bin", nil)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if gi.Key != st1.Key || gi.Size != st1.Size || gi.ETag != st1.ETag || !gi.ModTime.Equal(st1.ModTime) {
			t.Fatalf("get info %+v differs from stat %+v", gi, st1)
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
		if st, err := s.Stat(ctx, "empty"); err != nil || st.Size != 0 {
			t.Fatalf("empty stat %+v %v", st, err)
		}
	})
	t.Run("Readers", func(t *testing.T) {
		// Put must stream from seekable and one-shot readers alike, without buffering.
		s := newStore(t)
		data := random(t, 3<<20+17)
		put(t, s, "r/bytes", data)
		f, err := os.CreateTemp(t.TempDir(), "src")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "r/file", f, int64(len(data)), ""); err != nil {
			t.Fatalf("put from file: %v", err)
		}
		pr, pw := io.Pipe()
		go func() {
			for b := data; len(b) > 0; b = b[min(len(b), 7777):] {
				if _, err := pw.Write(b[:min(len(b), 7777)]); err != nil {
					return
				}
			}
			pw.Close()
		}()
		if err := s.Put(ctx, "r/pipe", pr, int64(len(data)), "application/octet-stream"); err != nil {
			t.Fatalf("put from pipe: %v", err)
		}
		for _, k := range []string{"r/bytes", "r/file", "r/pipe"} {
			if got := get(t, s, k, nil); !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes differ", k, len(got))
			}
		}
	})
	t.Run("Ranges", func(t *testing.T) {
		s := newStore(t)
		data := random(t, 100000)
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
			{blob.Range{Offset: 99999, Length: -1}, data[99999:]},
			{blob.Range{Offset: 0, Length: 100000}, data},
		}
		for _, c := range cases {
			rc, info, err := s.Get(ctx, "r/data", &c.rng)
			if err != nil {
				t.Fatalf("range %+v: %v", c.rng, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, c.want) || info.Size != int64(len(data)) {
				t.Fatalf("range %+v: %d bytes (want %d), size %d, %v", c.rng, len(got), len(c.want), info.Size, err)
			}
		}
		put(t, s, "r/empty", nil)
		for _, c := range []struct {
			key string
			rng blob.Range
		}{
			{"r/data", blob.Range{Offset: 100000, Length: 5}},
			{"r/data", blob.Range{Offset: 200000, Length: -1}},
			{"r/data", blob.Range{Offset: -1, Length: 5}},
			{"r/data", blob.Range{Offset: 5, Length: 0}},
			{"r/empty", blob.Range{Offset: 0, Length: -1}},
		} {
			if rc, _, err := s.Get(ctx, c.key, &c.rng); !errors.Is(err, blob.ErrInvalidRange) {
				if rc != nil {
					rc.Close()
				}
				t.Fatalf("%s range %+v: %v", c.key, c.rng, err)
			}
		}
	})
	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.Get(ctx, "no/such", nil); !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "no/such") {
			t.Fatalf("get missing: %v", err)
		}
		if _, _, err := s.Get(ctx, "no/such", &blob.Range{Offset: 1, Length: 1}); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("ranged get missing: %v", err)
		}
		if _, err := s.Stat(ctx, "no/such"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat missing: %v", err)
		}
		if err := s.Delete(ctx, "no/such"); err != nil {
			t.Fatalf("delete missing: %v", err)
		}
		put(t, s, "x/y", []byte("1"))
		// "x" is only a prefix of other keys, not an object.
		if _, err := s.Stat(ctx, "x"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat of a prefix: %v", err)
		}
		if _, err := s.Stat(ctx, "x/y/z"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat below an object: %v", err)
		}
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
		parallel(t, n, 16, func(i int) error {
			b := []byte(fmt.Sprint(i))
			return s.Put(ctx, fmt.Sprintf("many/%05d.dmp", i), bytes.NewReader(b), int64(len(b)), "")
		})
		put(t, s, "other/x", []byte("x"))
		put(t, s, "manyx", []byte("x"))
		page, more, err := s.List(ctx, "many/", "", 1000)
		if err != nil || len(page) != 1000 || !more || page[0].Key != "many/00000.dmp" || page[999].Key != "many/00999.dmp" {
			t.Fatalf("first page: %d items, more=%v, err=%v", len(page), more, err)
		}
		if page[7].Size != 1 || page[500].Size != 3 || page[7].ETag == "" || page[7].ModTime.IsZero() {
			t.Fatalf("listed info: %+v %+v", page[7], page[500])
		}
		page2, more, err := s.List(ctx, "many/", page[999].Key, 1000)
		if err != nil || len(page2) != 100 || more || page2[0].Key != "many/01000.dmp" {
			t.Fatalf("second page: %d items, more=%v, err=%v", len(page2), more, err)
		}
		var keys []string
		if err := blob.Walk(ctx, s, "many/", func(i blob.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(keys) != n || !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != n {
			t.Fatalf("walk: %d keys, sorted=%v", len(keys), slices.IsSorted(keys))
		}
		deleted, err := blob.DeletePrefix(ctx, s, "many/")
		if err != nil || deleted != n {
			t.Fatalf("delete prefix: %d %v", deleted, err)
		}
		if got := listKeys(t, s, "", "", 1000); !slices.Equal(got, []string{"manyx", "other/x"}) {
			t.Fatalf("after delete prefix: %v", got)
		}
	})
	t.Run("ListPrefixOrderStartAfter", func(t *testing.T) {
		s := newStore(t)
		// '-' and '.' sort before '/', '0' after it: byte order, not directory order.
		all := []string{"p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab/c", "p/abc", "pq/x", "p2", "q"}
		for _, k := range all {
			put(t, s, k, []byte(k))
		}
		for _, c := range []struct {
			prefix, after string
			limit         int
			want          []string
			more          bool
		}{
			{"", "", 100, all[:0], false}, // filled in below: everything, sorted
			{"p/", "", 100, []string{"p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab/c", "p/abc"}, false},
			{"p/a", "", 100, []string{"p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab/c", "p/abc"}, false},
			{"p/a/", "", 100, []string{"p/a/b", "p/a/c/d"}, false},
			{"p/ab", "", 100, []string{"p/ab/c", "p/abc"}, false},
			{"p/ab/", "", 100, []string{"p/ab/c"}, false},
			{"p/nothing/", "", 100, nil, false},
			{"zzz", "", 100, nil, false},
			{"p/", "", 2, []string{"p/a-b", "p/a.b"}, true},
			{"p/", "p/a.b", 2, []string{"p/a/b", "p/a/c/d"}, true},
			{"p/", "p/a/", 3, []string{"p/a/b", "p/a/c/d", "p/a0"}, true},
			{"p/", "p/ab/c", 1, []string{"p/abc"}, false},
			{"p/", "a", 1, []string{"p/a-b"}, true},
			{"p/", "p/abc", 10, nil, false},
			{"p/", "r", 10, nil, false},
		} {
			want := c.want
			if c.prefix == "" {
				want = slices.Sorted(slices.Values(all))
			}
			items, more, err := s.List(ctx, c.prefix, c.after, c.limit)
			if err != nil {
				t.Fatalf("list %q after %q: %v", c.prefix, c.after, err)
			}
			var got []string
			for _, it := range items {
				got = append(got, it.Key)
			}
			if !slices.Equal(got, want) || more != c.more {
				t.Errorf("list %q after %q limit %d: %v more=%v, want %v more=%v", c.prefix, c.after, c.limit, got, more, want, c.more)
			}
		}
	})
	t.Run("KeyValidation", func(t *testing.T) {
		s := newStore(t)
		bad := []string{"", "../x", "a/../../x", "..", ".", "/abs", "a//b", "a/./b", "a/", "nul\x00", "tab\tkey",
			`back\slash`, "bad\xffutf8", strings.Repeat("k", 1025)}
		for _, k := range bad {
			if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1, ""); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("put %q: %v", k, err)
			}
			if _, _, err := s.Get(ctx, k, nil); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("get %q: %v", k, err)
			}
			if _, _, err := s.Get(ctx, k, &blob.Range{Offset: 0, Length: 1}); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("ranged get %q: %v", k, err)
			}
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("stat %q: %v", k, err)
			}
			if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("delete %q: %v", k, err)
			}
		}
		for _, p := range []string{"../", "/abs/", "a//", "a/./", "nul\x00/"} {
			if _, _, err := s.List(ctx, p, "", 10); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("list %q: %v", p, err)
			}
		}
		for _, p := range []string{"", "nope", "a"} {
			if _, err := blob.DeletePrefix(ctx, s, p); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("delete prefix %q: %v", p, err)
			}
		}
		if items, _, err := s.List(ctx, "", "", 10); err != nil || len(items) != 0 {
			t.Fatalf("invalid keys left objects: %+v %v", items, err)
		}
	})
	t.Run("DeletePrefix", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"a/x", "a/y/z", "a/y/w", "ab/x", "b"} {
			put(t, s, k, []byte(k))
		}
		n, err := blob.DeletePrefix(ctx, s, "a/")
		if err != nil || n != 3 {
			t.Fatalf("delete prefix: %d %v", n, err)
		}
		if got := listKeys(t, s, "", "", 100); !slices.Equal(got, []string{"ab/x", "b"}) {
			t.Fatalf("left: %v", got)
		}
		if n, err := blob.DeletePrefix(ctx, s, "a/"); err != nil || n != 0 {
			t.Fatalf("again: %d %v", n, err)
		}
		put(t, s, "a/x", []byte("back")) // the prefix stays usable
		if got := get(t, s, "a/x", nil); string(got) != "back" {
			t.Fatalf("reuse: %q", got)
		}
	})
	t.Run("DeleteMany", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"a/1", "a/2", "a/3", "a/4", "keep"} {
			put(t, s, k, []byte(k))
		}
		if errs := blob.DeleteMany(ctx, s, nil); len(errs) != 0 {
			t.Fatalf("no keys: %v", errs)
		}
		keys := []string{"a/1", "no/such", "a/../keep", "a/3", "a/1"}
		errs := blob.DeleteMany(ctx, s, keys)
		if len(errs) != len(keys) {
			t.Fatalf("%d errors for %d keys", len(errs), len(keys))
		}
		for i, err := range errs {
			if wantBad := keys[i] == "a/../keep"; wantBad != errors.Is(err, blob.ErrInvalidKey) || !wantBad && err != nil {
				t.Errorf("%s: %v", keys[i], err)
			}
		}
		if got := listKeys(t, s, "", "", 100); !slices.Equal(got, []string{"a/2", "a/4", "keep"}) {
			t.Fatalf("left: %v", got)
		}
		// More keys than one S3 request takes (1000).
		var many []string
		for i := range 1003 {
			many = append(many, fmt.Sprintf("m/%04d", i))
			put(t, s, many[i], nil)
		}
		for i, err := range blob.DeleteMany(ctx, s, many) {
			if err != nil {
				t.Fatalf("%s: %v", many[i], err)
			}
		}
		if got := listKeys(t, s, "m/", "", 10); len(got) != 0 {
			t.Fatalf("left of 1003: %v", got)
		}
	})
	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "keep", []byte("old"))
		big := random(t, 1<<20)
		for _, c := range []struct {
			key  string
			r    io.Reader
			size int64
			want error
		}{
			{"broken", io.MultiReader(bytes.NewReader(big), errReader{}), 2 << 20, errBoom},
			{"broken2", io.MultiReader(bytes.NewReader([]byte("partial")), errReader{}), 100, errBoom},
			{"keep", io.MultiReader(bytes.NewReader([]byte("new")), errReader{}), 100, errBoom},
			{"short", bytes.NewReader([]byte("abc")), 10, blob.ErrSizeMismatch},
			{"shortbig", oneShot{bytes.NewReader(big)}, 2 << 20, blob.ErrSizeMismatch},
			{"long", bytes.NewReader([]byte("abcdef")), 3, blob.ErrSizeMismatch},
			{"longbig", oneShot{bytes.NewReader(big)}, 1<<20 - 1, blob.ErrSizeMismatch},
			{"longempty", bytes.NewReader([]byte("x")), 0, blob.ErrSizeMismatch},
			{"negative", bytes.NewReader(nil), -1, blob.ErrSizeMismatch},
		} {
			err := s.Put(ctx, c.key, c.r, c.size, "")
			if !errors.Is(err, c.want) || errors.Is(err, blob.ErrUnavailable) {
				t.Errorf("put %s: %v (want %v)", c.key, err, c.want)
			}
		}
		if got := listKeys(t, s, "", "", 100); !slices.Equal(got, []string{"keep"}) {
			t.Fatalf("objects after failed puts: %v", got)
		}
		if got := get(t, s, "keep", nil); string(got) != "old" {
			t.Fatalf("failed overwrite changed the object: %q", got)
		}
		ctx, cancel := context.WithCancel(ctx)
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(big)
			cancel()
			time.Sleep(100 * time.Millisecond)
			pw.CloseWithError(errBoom) // unblock a backend that does not watch ctx while reading
		}()
		if err := s.Put(ctx, "cancelled", pr, 2<<20, ""); err == nil {
			t.Fatal("cancelled put succeeded")
		}
		if _, err := s.Stat(context.Background(), "cancelled"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("cancelled put left an object: %v", err)
		}
	})
	t.Run("ConcurrentOverwrites", func(t *testing.T) {
		s := newStore(t)
		vals := make([][]byte, 8)
		for i := range vals {
			vals[i] = bytes.Repeat([]byte{byte('a' + i)}, 256*1024)
		}
		parallel(t, len(vals), len(vals), func(i int) error {
			return s.Put(ctx, "same/key", oneShot{bytes.NewReader(vals[i])}, int64(len(vals[i])), "")
		})
		got := get(t, s, "same/key", nil)
		if !slices.ContainsFunc(vals, func(v []byte) bool { return bytes.Equal(got, v) }) {
			t.Fatalf("object is a mix of concurrent writes (%d bytes)", len(got))
		}
	})
	t.Run("ConcurrentPutDeleteSameDir", func(t *testing.T) {
		// Deleting the last object of a "directory" must not break a Put into it.
		s := newStore(t)
		parallel(t, 200, 16, func(i int) error {
			k := fmt.Sprintf("d/e/%d", i%4)
			if i%2 == 1 {
				return s.Delete(ctx, k)
			}
			return s.Put(ctx, k, bytes.NewReader([]byte("v")), 1, "")
		})
	})
}

var errBoom = errors.New("reader failed")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBoom }

// oneShot hides Seek and WriterTo, like a request body.
type oneShot struct{ r io.Reader }

func (o oneShot) Read(p []byte) (int, error) { return o.r.Read(p) }

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// parallel runs fn(0..n-1) with the given concurrency and fails on the first error.
func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- fn(i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func listKeys(t *testing.T, s blob.Store, prefix, after string, limit int) []string {
	t.Helper()
	items, _, err := s.List(context.Background(), prefix, after, limit)
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	return keys
}

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
