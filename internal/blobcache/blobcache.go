// Package blobcache keeps copies of immutable objects of a blob.Store in a local
// directory, named by their SHA-256, so repeated reads are served from local files
// (which the HTTP server can send with sendfile) instead of being proxied from remote
// object storage on every request.
//
// Content addressing makes the cache safe without invalidation: a caller asks for an
// object by key together with the size and SHA-256 its database row records, and
// gets a file with exactly that content or an error. A replaced object has a new
// SHA-256 and so a new file; an old file is simply never asked for again and ages out.
//
// The directory is disposable: files are written without fsync and anything in it may
// be deleted at any time. Files found there at start-up (from an earlier run, or from
// another process sharing the directory) are hashed the first time this process uses
// them and replaced when they do not match. Each process bounds only the bytes it
// knows about; processes sharing a directory may together exceed one bound.
package blobcache

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/iotsupport/iotsupport/internal/blob"
)

var (
	// ErrTooLarge: the object is larger than the cache's bound and is never cached;
	// read it from the store instead.
	ErrTooLarge = errors.New("object larger than the cache")
	// ErrMismatch: the store's object does not have the size or SHA-256 the caller
	// expected (e.g. the row is stale or the object was replaced or damaged).
	ErrMismatch = errors.New("stored object does not match its recorded size and SHA-256")
)

// tmpPrefix marks fills in progress. Stale ones (from a crash) are removed at start-up.
const tmpPrefix = ".tmp-"

// staleTemp is how old a temp file must be before start-up removes it: younger ones
// may be fills of another process sharing the directory.
const staleTemp = time.Hour

// DefaultFillTimeout bounds one fetch from the store into the cache.
const DefaultFillTimeout = 5 * time.Minute

// Options tune a Cache; zero values take defaults.
type Options struct {
	// FillTimeout bounds one fetch; the fetch is not cancelled when the request that
	// started it goes away, since others may be waiting for the same object.
	FillTimeout time.Duration
	Log         *slog.Logger
	// Registerer receives the iotsupport_blobcache_* metrics (nil: none).
	Registerer prometheus.Registerer
}

// Cache is a size-bounded, content-addressed cache of store objects on local disk.
type Cache struct {
	store blob.Store
	dir   string
	max   int64
	opt   Options

	flights singleflight.Group

	mu      sync.Mutex
	entries map[string]*list.Element // SHA-256 hex -> element holding *entry
	lru     *list.List               // front: most recently used
	total   int64

	hits, misses, fillErrs prometheus.Counter
	fillBytes              prometheus.Counter
}

type entry struct {
	sum      string
	size     int64
	verified bool // hashed (or written) by this process
}

// New opens (creating if needed) a cache in dir holding at most max bytes of objects
// read from store. Files already in dir are counted (oldest modification first in
// eviction order) and verified on first use.
func New(store blob.Store, dir string, max int64, opt Options) (*Cache, error) {
	if max <= 0 {
		return nil, fmt.Errorf("blobcache: max must be positive, got %d", max)
	}
	if opt.FillTimeout <= 0 {
		opt.FillTimeout = DefaultFillTimeout
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("blobcache: create %s: %w", dir, err)
	}
	c := &Cache{store: store, dir: dir, max: max, opt: opt, entries: map[string]*list.Element{}, lru: list.New()}
	c.hits = prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_blobcache_hits_total",
		Help: "Object reads served from the local cache without fetching."})
	c.misses = prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_blobcache_misses_total",
		Help: "Object reads that had to fetch the object into the local cache (concurrent ones share a fetch)."})
	c.fillErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_blobcache_fill_errors_total",
		Help: "Fetches into the local cache that failed (store errors, size or SHA-256 mismatches, disk errors)."})
	c.fillBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_blobcache_fill_bytes_total",
		Help: "Bytes fetched from the store into the local cache."})
	if opt.Registerer != nil {
		opt.Registerer.MustRegister(c.hits, c.misses, c.fillErrs, c.fillBytes,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotsupport_blobcache_bytes",
				Help: "Bytes of objects in the local cache."}, func() float64 { return float64(c.Bytes()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotsupport_blobcache_max_bytes",
				Help: "Bound of the local cache."}, func() float64 { return float64(c.max) }))
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load seeds the LRU from the directory and removes stale temp files.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("blobcache: read %s: %w", c.dir, err)
	}
	type found struct {
		sum  string
		size int64
		mod  time.Time
	}
	var files []found
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		name := de.Name()
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if time.Since(fi.ModTime()) > staleTemp {
				_ = os.Remove(filepath.Join(c.dir, name))
			}
		case validSum(name):
			files = append(files, found{name, fi.Size(), fi.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	c.mu.Lock()
	for _, f := range files { // oldest first, each pushed to the front: newest ends up in front
		c.entries[f.sum] = c.lru.PushFront(&entry{sum: f.sum, size: f.size})
		c.total += f.size
	}
	victims := c.evictLocked("")
	c.mu.Unlock()
	c.remove(victims)
	return nil
}

func validSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Max is the bound in bytes.
func (c *Cache) Max() int64 { return c.max }

// Bytes is the size of the objects the cache currently counts.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *Cache) path(sum string) string { return filepath.Join(c.dir, sum) }

// Open returns an open file holding exactly the object stored under key, whose size
// and SHA-256 (hex) are as given, positioned at its start. The caller closes it.
//
// On a miss the object is fetched from the store into the cache, verified and then
// opened; concurrent misses for the same content share one fetch, which continues
// (bounded by FillTimeout) even when ctx ends. Errors: ErrTooLarge for objects over
// the bound, ErrMismatch when the store's content differs, the store's errors
// (blob.ErrNotFound, blob.ErrUnavailable) and local disk errors. Nothing is cached
// on any error.
func (c *Cache) Open(ctx context.Context, key string, size int64, sum string) (*os.File, error) {
	sum = strings.ToLower(sum)
	if !validSum(sum) {
		return nil, fmt.Errorf("blobcache: %q is not a SHA-256 in hex", sum)
	}
	if size < 0 {
		return nil, fmt.Errorf("blobcache: negative size %d", size)
	}
	if size > c.max {
		return nil, fmt.Errorf("%w: %d bytes, bound %d", ErrTooLarge, size, c.max)
	}
	missed := false
	// A file can vanish between being ensured and being opened (evicted for another
	// fill, or removed by another process sharing the directory): then ensure again.
	for attempt := 0; ; attempt++ {
		if f, ok := c.openVerified(sum, size); ok {
			if !missed {
				c.hits.Inc()
			}
			return f, nil
		}
		if attempt == 3 {
			return nil, fmt.Errorf("blobcache: %s keeps disappearing from %s", sum, c.dir)
		}
		missed = true
		ch := c.flights.DoChan(sum, func() (any, error) { return nil, c.ensure(ctx, key, size, sum) })
		select {
		case res := <-ch:
			if res.Err != nil {
				return nil, res.Err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// openVerified opens the file when a verified entry of that size exists, moving it to
// the front of the LRU. A vanished file drops its entry.
func (c *Cache) openVerified(sum string, size int64) (*os.File, bool) {
	c.mu.Lock()
	el, ok := c.entries[sum]
	if !ok || !el.Value.(*entry).verified || el.Value.(*entry).size != size {
		c.mu.Unlock()
		return nil, false
	}
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	f, err := os.Open(c.path(sum))
	if err != nil {
		c.drop(sum, el)
		return nil, false
	}
	return f, true
}

// drop forgets el if it is still the entry of sum.
func (c *Cache) drop(sum string, el *list.Element) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.entries[sum]; ok && cur == el {
		c.lru.Remove(el)
		delete(c.entries, sum)
		c.total -= el.Value.(*entry).size
	}
}

// ensure makes sure a verified file for sum exists: it hashes a file found on disk
// (from before this process), or fetches the object. It runs once per sum at a time.
func (c *Cache) ensure(ctx context.Context, key string, size int64, sum string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opt.FillTimeout)
	defer cancel()
	c.mu.Lock()
	el, ok := c.entries[sum]
	c.mu.Unlock()
	if ok {
		e := el.Value.(*entry)
		if e.verified && e.size == size {
			return nil // filled by a flight that ended just before this one began
		}
		if !e.verified && c.verifyFile(sum, size) {
			c.mu.Lock()
			if cur, ok := c.entries[sum]; ok && cur == el {
				e.verified = true
			}
			c.mu.Unlock()
			return nil
		}
		c.opt.Log.Warn("cached object does not match its SHA-256, fetching it again", "sha256", sum, "key", key)
		c.drop(sum, el)
		_ = os.Remove(c.path(sum))
	}
	c.misses.Inc()
	if err := c.fill(ctx, key, size, sum); err != nil {
		c.fillErrs.Inc()
		return err
	}
	return nil
}

// verifyFile reports whether the file for sum has the given size and content hash.
func (c *Cache) verifyFile(sum string, size int64) bool {
	f, err := os.Open(c.path(sum))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != size {
		return false
	}
	h := sha256.New()
	if n, err := io.Copy(h, f); err != nil || n != size {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sum
}

// fill fetches key into a temp file while hashing, checks size and SHA-256, renames
// it into place, records it and evicts what no longer fits.
func (c *Cache) fill(ctx context.Context, key string, size int64, sum string) (err error) {
	// The temp file first: a broken cache directory costs no request to the store.
	rnd := make([]byte, 8)
	_, _ = rand.Read(rnd)
	tmp := filepath.Join(c.dir, tmpPrefix+hex.EncodeToString(rnd))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()
	rc, _, err := c.store.Get(ctx, key, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	src := &errReader{r: rc}
	// One byte more than expected reveals a longer object without reading all of it.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(src, size+1))
	c.fillBytes.Add(float64(n))
	if err != nil {
		switch {
		case src.err == nil: // the local write failed
			return fmt.Errorf("blobcache: write %s: %w", tmp, err)
		case errors.Is(err, blob.ErrUnavailable) || errors.Is(err, blob.ErrNotFound):
			return err
		}
		return fmt.Errorf("%w: read %s: %w", blob.ErrUnavailable, key, err)
	}
	if n != size {
		return fmt.Errorf("%w: %s has %d bytes or more, expected %d", ErrMismatch, key, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%w: %s has SHA-256 %s, expected %s", ErrMismatch, key, got, sum)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("blobcache: write %s: %w", tmp, err)
	}
	// No fsync: after a crash a damaged file fails verification and is fetched again.
	if err = os.Rename(tmp, c.path(sum)); err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	c.mu.Lock()
	if old, ok := c.entries[sum]; ok {
		c.lru.Remove(old)
		c.total -= old.Value.(*entry).size
	}
	c.entries[sum] = c.lru.PushFront(&entry{sum: sum, size: size, verified: true})
	c.total += size
	victims := c.evictLocked(sum)
	c.mu.Unlock()
	c.remove(victims)
	return nil
}

// errReader remembers the error of its reader, to tell store failures from disk ones.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// evictLocked takes least recently used entries off the books (never keep) until the
// total is within the bound, and returns their names for removal.
func (c *Cache) evictLocked(keep string) []string {
	var victims []string
	for el := c.lru.Back(); el != nil && c.total > c.max; {
		prev := el.Prev()
		if e := el.Value.(*entry); e.sum != keep {
			c.lru.Remove(el)
			delete(c.entries, e.sum)
			c.total -= e.size
			victims = append(victims, e.sum)
		}
		el = prev
	}
	return victims
}

// remove deletes evicted files. A request still sending one keeps its open file
// (Linux unlinks the name only). If the same content is filled again meanwhile,
// its new file may go too: the next Open notices and fetches once more.
func (c *Cache) remove(victims []string) {
	for _, sum := range victims {
		if err := os.Remove(c.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.opt.Log.Warn("remove evicted cache file", "sha256", sum, "error", err)
		}
	}
}
