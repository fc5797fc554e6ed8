package blobcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/blobcache"
)

// countingStore is a real local store that counts Gets and can hold them at a gate.
type countingStore struct {
	blob.Store
	gets atomic.Int64
	gate chan struct{} // when set, Get waits for it to close
	in   chan struct{} // when set, Get signals here on entry
}

func (s *countingStore) Get(ctx context.Context, key string, rng *blob.Range) (io.ReadCloser, blob.Info, error) {
	s.gets.Add(1)
	if s.in != nil {
		s.in <- struct{}{}
	}
	if s.gate != nil {
		<-s.gate
	}
	return s.Store.Get(ctx, key, rng)
}

func newStore(t *testing.T) *countingStore {
	t.Helper()
	l, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &countingStore{Store: l}
}

// put stores n pseudo-random bytes under key and returns them with their SHA-256.
func put(t *testing.T, s blob.Store, key string, n int) ([]byte, string) {
	t.Helper()
	seed := sha256.Sum256([]byte(key))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7+i/251) ^ seed[i%len(seed)]
	}
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(n), ""); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:])
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func newCache(t *testing.T, s blob.Store, dir string, max int64) *blobcache.Cache {
	t.Helper()
	c, err := blobcache.New(s, dir, max, blobcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readOpen(t *testing.T, c *blobcache.Cache, key string, size int64, sum string) []byte {
	t.Helper()
	f, err := c.Open(context.Background(), key, size, sum)
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// files lists the cache directory, failing on leftover temp files.
func files(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", de.Name())
		}
		out = append(out, de.Name())
	}
	sort.Strings(out)
	return out
}

func TestMissThenHitsFetchOnce(t *testing.T) {
	s := newStore(t)
	data, sum := put(t, s, "firmware/a/1/firmware.bin", 300_000)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	c, err := blobcache.New(s, dir, 1<<20, blobcache.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if got := readOpen(t, c, "firmware/a/1/firmware.bin", int64(len(data)), sum); !bytes.Equal(got, data) {
			t.Fatalf("read %d: wrong content", i)
		}
	}
	if n := s.gets.Load(); n != 1 {
		t.Fatalf("store Gets = %d, want 1", n)
	}
	if got := files(t, dir); len(got) != 1 || got[0] != sum {
		t.Fatalf("cache dir = %v, want [%s]", got, sum)
	}
	if c.Bytes() != int64(len(data)) {
		t.Fatalf("Bytes = %d", c.Bytes())
	}
	if h, m := counter(t, reg, "iotsupport_blobcache_hits_total"), counter(t, reg, "iotsupport_blobcache_misses_total"); h != 4 || m != 1 {
		t.Fatalf("metrics: %v hits, %v misses; want 4, 1", h, m)
	}
	// Upper-case hex names the same content.
	readOpen(t, c, "firmware/a/1/firmware.bin", int64(len(data)), strings.ToUpper(sum))
	if n := s.gets.Load(); n != 1 {
		t.Fatalf("store Gets = %d after upper-case lookup", n)
	}
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	s := newStore(t)
	data, sum := put(t, s, "k", 200_000)
	s.gate = make(chan struct{})
	s.in = make(chan struct{}, 100)
	c := newCache(t, s, t.TempDir(), 1<<20)

	// The first client disconnects while the fetch it started is still running: the
	// fetch goes on for the others.
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.Open(ctx, "k", int64(len(data)), sum)
		firstErr <- err
	}()
	<-s.in // the fetch has started
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := c.Open(context.Background(), "k", int64(len(data)), sum)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			b, err := io.ReadAll(f)
			if err == nil && !bytes.Equal(b, data) {
				err = errors.New("wrong content")
			}
			errs <- err
		}()
	}
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled client: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // let the others pile up on the flight
	close(s.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if g := s.gets.Load(); g != 1 {
		t.Fatalf("store Gets = %d, want 1", g)
	}
}

func TestCorruptStoreContentIsNotCached(t *testing.T) {
	s := newStore(t)
	data, _ := put(t, s, "k", 10_000)
	dir := t.TempDir()
	c := newCache(t, s, dir, 1<<20)
	wrong := sha256.Sum256([]byte("something else"))
	for range 2 {
		_, err := c.Open(context.Background(), "k", int64(len(data)), hex.EncodeToString(wrong[:]))
		if !errors.Is(err, blobcache.ErrMismatch) {
			t.Fatalf("wrong SHA-256: %v", err)
		}
	}
	if g := s.gets.Load(); g != 2 {
		t.Fatalf("store Gets = %d, want 2 (a mismatch is never cached)", g)
	}
	// Size differs from the record (the object is longer, or shorter).
	sum := sha256.Sum256(data[:5000])
	if _, err := c.Open(context.Background(), "k", 5000, hex.EncodeToString(sum[:])); !errors.Is(err, blobcache.ErrMismatch) {
		t.Fatalf("longer object: %v", err)
	}
	full := sha256.Sum256(data)
	if _, err := c.Open(context.Background(), "k", 20_000, hex.EncodeToString(full[:])); !errors.Is(err, blobcache.ErrMismatch) {
		t.Fatalf("shorter object: %v", err)
	}
	if _, err := c.Open(context.Background(), "missing", 10, hex.EncodeToString(full[:])); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := c.Open(context.Background(), "k", 10, "not-a-sha"); err == nil {
		t.Fatal("invalid SHA-256 accepted")
	}
	if got := files(t, dir); len(got) != 0 || c.Bytes() != 0 {
		t.Fatalf("cache holds %v (%d bytes) after failures", got, c.Bytes())
	}
}

func TestOversizeIsNeverCached(t *testing.T) {
	s := newStore(t)
	data, sum := put(t, s, "big", 4096)
	dir := t.TempDir()
	c := newCache(t, s, dir, 4095)
	if _, err := c.Open(context.Background(), "big", int64(len(data)), sum); !errors.Is(err, blobcache.ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if g := s.gets.Load(); g != 0 || len(files(t, dir)) != 0 {
		t.Fatalf("oversize object fetched (%d Gets) or cached", g)
	}
}

func TestEvictionKeepsBoundAndEvictsLeastRecentlyUsed(t *testing.T) {
	s := newStore(t)
	type obj struct {
		data []byte
		sum  string
	}
	objs := map[string]obj{}
	for _, k := range []string{"a", "b", "c", "d"} {
		d, sum := put(t, s, k, 1000)
		objs[k] = obj{d, sum}
	}
	dir := t.TempDir()
	c := newCache(t, s, dir, 3000)
	open := func(k string) {
		t.Helper()
		if got := readOpen(t, c, k, 1000, objs[k].sum); !bytes.Equal(got, objs[k].data) {
			t.Fatalf("%s: wrong content", k)
		}
		if c.Bytes() > 3000 {
			t.Fatalf("cache holds %d bytes, bound 3000", c.Bytes())
		}
	}
	open("a")
	// A reader of b keeps its file after eviction.
	fb, err := c.Open(context.Background(), "b", 1000, objs["b"].sum)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	open("c")
	open("a") // a is now more recent than b and c
	open("d") // evicts b, the least recently used (not a, the oldest fill)
	want := []string{objs["a"].sum, objs["c"].sum, objs["d"].sum}
	sort.Strings(want)
	if got := files(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cache dir = %v, want a, c, d = %v", got, want)
	}
	if b, err := io.ReadAll(fb); err != nil || !bytes.Equal(b, objs["b"].data) {
		t.Fatalf("open reader of an evicted file: %v", err)
	}
	before := s.gets.Load()
	open("a")
	open("c")
	open("d")
	if g := s.gets.Load(); g != before {
		t.Fatalf("cached objects fetched again (%d Gets)", g-before)
	}
	open("b") // fetched again, evicting a (used before c and d)
	if g := s.gets.Load(); g != before+1 {
		t.Fatalf("evicted object: %d Gets, want 1", g-before)
	}
	want = []string{objs["b"].sum, objs["c"].sum, objs["d"].sum}
	sort.Strings(want)
	if got := files(t, dir); fmt.Sprint(got) != fmt.Sprint(want) || c.Bytes() != 3000 {
		t.Fatalf("cache dir = %v (%d bytes), want b, c, d = %v", got, c.Bytes(), want)
	}
}

func TestFilesFromEarlierRunsAreVerified(t *testing.T) {
	s := newStore(t)
	good, goodSum := put(t, s, "good", 5000)
	bad, badSum := put(t, s, "bad", 5000)
	dir := t.TempDir()
	// An earlier run left a correct file, a damaged one (same size, other bytes), a
	// truncated temp file of a crashed fill and an unrelated file.
	if err := os.WriteFile(filepath.Join(dir, goodSum), good, 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(bad)
	damaged[100] ^= 0xff
	if err := os.WriteFile(filepath.Join(dir, badSum), damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".tmp-0123456789abcdef")
	if err := os.WriteFile(stale, bad[:10], 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCache(t, s, dir, 1<<20)
	if c.Bytes() != 10000 {
		t.Fatalf("seeded %d bytes, want 10000", c.Bytes())
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file kept: %v", err)
	}
	if got := readOpen(t, c, "good", 5000, goodSum); !bytes.Equal(got, good) || s.gets.Load() != 0 {
		t.Fatalf("verified file from an earlier run: equal=%v, Gets=%d", bytes.Equal(got, good), s.gets.Load())
	}
	if got := readOpen(t, c, "bad", 5000, badSum); !bytes.Equal(got, bad) || s.gets.Load() != 1 {
		t.Fatalf("damaged file: equal=%v, Gets=%d", bytes.Equal(got, bad), s.gets.Load())
	}
	if b, err := os.ReadFile(filepath.Join(dir, badSum)); err != nil || !bytes.Equal(b, bad) {
		t.Fatalf("damaged file not replaced: %v", err)
	}
	readOpen(t, c, "bad", 5000, badSum)
	if s.gets.Load() != 1 || c.Bytes() != 10000 {
		t.Fatalf("Gets=%d, Bytes=%d", s.gets.Load(), c.Bytes())
	}
}

func TestStartUpTrimsToTheBound(t *testing.T) {
	dir := t.TempDir()
	var sums []string
	for i := range 4 {
		data := bytes.Repeat([]byte{byte(i)}, 1000)
		sum := sha256.Sum256(data)
		name := hex.EncodeToString(sum[:])
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(time.Duration(i-10) * time.Minute) // file 0 is the oldest
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, name)
	}
	c := newCache(t, newStore(t), dir, 2500)
	want := []string{sums[2], sums[3]}
	sort.Strings(want)
	if got := files(t, dir); fmt.Sprint(got) != fmt.Sprint(want) || c.Bytes() != 2000 {
		t.Fatalf("after start-up: %v (%d bytes), want the two newest %v", got, c.Bytes(), want)
	}
}

// A file removed behind the cache's back (another replica sharing the directory, an
// operator) is fetched again rather than failing.
func TestVanishedFileIsFetchedAgain(t *testing.T) {
	s := newStore(t)
	data, sum := put(t, s, "k", 3000)
	dir := t.TempDir()
	c := newCache(t, s, dir, 1<<20)
	readOpen(t, c, "k", 3000, sum)
	if err := os.Remove(filepath.Join(dir, sum)); err != nil {
		t.Fatal(err)
	}
	if got := readOpen(t, c, "k", 3000, sum); !bytes.Equal(got, data) || s.gets.Load() != 2 {
		t.Fatalf("equal=%v Gets=%d", bytes.Equal(got, data), s.gets.Load())
	}
}

func TestFailedDiskWriteLeavesNothing(t *testing.T) {
	s := newStore(t)
	data, sum := put(t, s, "k", 3000)
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	c := newCache(t, s, dir, 1<<20)
	// The directory is replaced by a file: the fill cannot create its temp file.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(context.Background(), "k", int64(len(data)), sum); err == nil || errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("unwritable cache: %v", err)
	}
	if c.Bytes() != 0 || s.gets.Load() != 0 {
		t.Fatalf("Bytes = %d, store Gets = %d (a broken directory should cost no fetch)", c.Bytes(), s.gets.Load())
	}
}
