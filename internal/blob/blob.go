// Package blob is the object store: one small interface with a local-directory and an
// S3 backend, and one compliance suite that every backend passes.
package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrUnavailable: the store could not be reached or failed (answer 503, retry later).
	ErrUnavailable = errors.New("object storage unavailable")
	// ErrInvalidKey: the key is not acceptable (escapes, empty segments, control characters).
	ErrInvalidKey = errors.New("invalid object key")
	// ErrInvalidRange: the requested range is empty, negative or starts at or beyond the
	// end of the object (so any range of an empty object is invalid, like HTTP 416).
	ErrInvalidRange = errors.New("invalid range")
	// ErrSizeMismatch: Put's reader delivered fewer or more bytes than the declared size.
	// It is the client's fault (400), not the store's, so it is not ErrUnavailable.
	ErrSizeMismatch = errors.New("object size mismatch")
)

// Info describes a stored object.
type Info struct {
	Key     string
	Size    int64
	ETag    string
	ModTime time.Time
}

// Range selects bytes [Offset, Offset+Length); Length < 0 means to the end.
type Range struct {
	Offset, Length int64
}

// Store is an object store.
type Store interface {
	// Put stores exactly size bytes from r under key, atomically: readers see the old
	// object or the whole new one, and a short, long or failing reader leaves no object.
	// Errors from r are returned wrapped (never as ErrUnavailable), so callers can tell
	// a broken or oversized upload (http.MaxBytesError) from a storage outage.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Get opens the object, or the given range of it; Info.Size is the whole object's size.
	Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error)
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List returns up to limit objects whose keys start with prefix and sort after
	// startAfter, in lexical order, and whether more follow.
	List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, bool, error)
	// Check reports whether the store is reachable and usable (readiness).
	Check(ctx context.Context) error
}

// ValidKey checks a key: 1-1024 bytes, '/'-separated non-empty segments that are not
// "." or "..", no leading '/', no backslash, no control characters.
func ValidKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("%w: length %d", ErrInvalidKey, len(key))
	}
	if strings.HasPrefix(key, "/") || strings.ContainsRune(key, '\\') {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: not UTF-8: %q", ErrInvalidKey, key)
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control character in %q", ErrInvalidKey, key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: bad segment in %q", ErrInvalidKey, key)
		}
	}
	return nil
}

// checkRange validates a range before any I/O; size checks happen in the backends.
func checkRange(rng *Range) error {
	if rng != nil && (rng.Offset < 0 || rng.Length == 0) {
		return fmt.Errorf("%w: offset %d length %d", ErrInvalidRange, rng.Offset, rng.Length)
	}
	return nil
}

func checkSize(size int64) error {
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrSizeMismatch, size)
	}
	return nil
}

// validPrefix accepts "" or a valid key optionally followed by "/".
func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidKey(strings.TrimSuffix(prefix, "/"))
}

// Walk calls fn for every object under prefix, page by page.
func Walk(ctx context.Context, s Store, prefix string, fn func(Info) error) error {
	after := ""
	for {
		items, more, err := s.List(ctx, prefix, after, 1000)
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := fn(it); err != nil {
				return err
			}
		}
		if !more || len(items) == 0 {
			return nil
		}
		after = items[len(items)-1].Key
	}
}

// DeletePrefix deletes every object under prefix and returns how many it deleted. The
// prefix must end with '/' so a typo can never widen it to unrelated keys (or all).
func DeletePrefix(ctx context.Context, s Store, prefix string) (int, error) {
	if prefix == "" || !strings.HasSuffix(prefix, "/") {
		return 0, fmt.Errorf("%w: prefix %q must be non-empty and end with /", ErrInvalidKey, prefix)
	}
	var keys []string
	if err := Walk(ctx, s, prefix, func(i Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		return 0, err
	}
	n := 0
	var firstErr error
	for _, err := range DeleteMany(ctx, s, keys) {
		if err == nil {
			n++
		} else if firstErr == nil {
			firstErr = err
		}
	}
	return n, firstErr
}

// BatchDeleter is a Store that removes many objects in one request (S3 DeleteObjects).
type BatchDeleter interface {
	// DeleteMany removes the objects under keys; a missing object is not an error. It
	// returns one error per key, nil for each key that is gone.
	DeleteMany(ctx context.Context, keys []string) []error
}

// DeleteMany removes the objects under keys in as few requests as the store allows and
// returns one error per key (nil: gone). A missing object is not an error.
func DeleteMany(ctx context.Context, s Store, keys []string) []error {
	if b, ok := s.(BatchDeleter); ok {
		return b.DeleteMany(ctx, keys)
	}
	return deleteEach(ctx, s.Delete, keys)
}

// deleteEach deletes keys one request each, a few in flight: one round trip per object
// adds up on S3. After a failure it starts no more requests (the store is most likely
// down): the keys not tried get that error.
func deleteEach(ctx context.Context, del func(context.Context, string) error, keys []string) []error {
	errs := make([]error, len(keys))
	var (
		wg     sync.WaitGroup
		failed atomic.Pointer[error]
	)
	sem := make(chan struct{}, 8)
	for i, k := range keys {
		sem <- struct{}{}
		if p := failed.Load(); p != nil {
			<-sem
			errs[i] = notTried(k, *p)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if errs[i] = del(ctx, k); errs[i] != nil {
				failed.CompareAndSwap(nil, &errs[i])
			}
		}()
	}
	wg.Wait()
	return errs
}

// notTried is the error of a key whose deletion was not attempted after err.
func notTried(key string, err error) error {
	return fmt.Errorf("delete %s: not tried after an earlier failure: %w", key, err)
}

// exactReader passes through exactly size bytes of r and fails if r ends early or holds
// more. It remembers the first such failure (or r's own error) so Put can report the
// client's fault instead of an outage. Extra bytes are detected before the last byte is
// released, so a transport never completes the body of a too-long upload.
type exactReader struct {
	r      io.Reader
	left   int64
	probed bool
	err    error
}

func newExactReader(r io.Reader, size int64) *exactReader { return &exactReader{r: r, left: size} }

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		if !e.probed {
			if err := e.probe(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		e.err = fmt.Errorf("%w: body ended %d bytes short", ErrSizeMismatch, e.left)
		return n, e.err
	case err == io.EOF:
		e.probed = true
		return n, io.EOF
	case err != nil:
		e.err = err
		return n, err
	}
	if e.left == 0 {
		if err := e.probe(); err != nil {
			return n - 1, err // withhold a byte so the body stays incomplete
		}
	}
	return n, nil
}

// probe reads one byte past the declared size: only EOF is acceptable.
func (e *exactReader) probe() error {
	e.probed = true
	var b [1]byte
	for i := 0; i < 100; i++ {
		n, err := e.r.Read(b[:])
		if n > 0 {
			e.err = fmt.Errorf("%w: body longer than declared", ErrSizeMismatch)
			return e.err
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			e.err = err
			return err
		}
	}
	e.err = io.ErrNoProgress
	return e.err
}

// ReadAll reads an object whole: ErrNotFound when it is missing, an error when it is over
// limit bytes (0: no limit).
func ReadAll(ctx context.Context, s Store, key string, limit int64) ([]byte, error) {
	rc, info, err := s.Get(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if limit > 0 && info.Size > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the %d-byte limit", key, info.Size, limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(info.Size))
	if _, err := io.Copy(&buf, rc); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf.Bytes(), nil
}
