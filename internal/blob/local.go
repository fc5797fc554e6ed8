package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// tmpPrefix marks in-progress writes; List skips them, keys may not use it, and fsck
// may remove stale ones.
const tmpPrefix = ".tmp-"

// maxSegment is the usual file-name limit; longer segments could never be stored.
const maxSegment = 255

// Local stores objects as files under a root directory. Keys map to paths; the store
// never creates symlinks, so any symlink met on a key's path is refused (no escapes).
// A key cannot be both an object and a "directory" of other keys here (unlike S3); the
// storage layout never needs that.
type Local struct {
	root string
}

// NewLocal opens (creating if needed) a local store rooted at dir.
func NewLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("%w: create %s: %v", ErrUnavailable, abs, err)
	}
	// Resolve symlinks once so the root itself may be a link (e.g. /var -> /private/var).
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return &Local{root: real}, nil
}

// Root is the directory holding the objects.
func (l *Local) Root() string { return l.root }

func (l *Local) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	segs := strings.Split(key, "/")
	for _, s := range segs {
		if len(s) > maxSegment || strings.HasPrefix(s, tmpPrefix) {
			return "", fmt.Errorf("%w: segment %.40q... not storable in a local store", ErrInvalidKey, s)
		}
	}
	p := filepath.Join(l.root, filepath.FromSlash(key))
	if !strings.HasPrefix(p, l.root+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %q escapes the store", ErrInvalidKey, key)
	}
	// Lstat each existing component: a symlink anywhere (even one planted in a parent
	// that does not exist yet for this key) could lead outside the root.
	cur := l.root
	for _, s := range segs {
		cur = filepath.Join(cur, s)
		fi, err := os.Lstat(cur)
		if err != nil {
			break // the rest does not exist yet
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: %q passes through a symlink", ErrInvalidKey, key)
		}
	}
	return p, nil
}

// readErr maps errors of reading an object: a missing file or a file where a directory
// was expected both mean "no such object".
func readErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, key, err)
}

func writeErr(key string, err error) error {
	return fmt.Errorf("%w: write %s: %w", ErrUnavailable, key, err)
}

// Put writes to a temp file in the target directory, fsyncs, renames over the target
// and fsyncs the directory, so a crash leaves either the old or the new object.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64, _ string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := checkSize(size); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	f, tmp, err := createTemp(dir)
	if err != nil {
		return writeErr(key, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	src := newExactReader(r, size)
	if _, err := io.Copy(f, ctxReader{ctx, src}); err != nil {
		switch {
		case src.err != nil:
			return fmt.Errorf("put %s: %w", key, src.err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		return writeErr(key, err)
	}
	if err := f.Sync(); err != nil {
		return writeErr(key, err)
	}
	if err := f.Close(); err != nil {
		return writeErr(key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return writeErr(key, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// createTemp makes dir and a temp file in it. A concurrent Delete may remove the fresh,
// still empty directory between the two steps, so retry a few times.
func createTemp(dir string) (*os.File, string, error) {
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return nil, "", err
		}
		rnd := make([]byte, 8)
		_, _ = rand.Read(rnd)
		tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd))
		var f *os.File
		f, err = os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			return f, tmp, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
	}
	return nil, "", err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func info(key string, fi os.FileInfo) Info {
	// The ETag is size and modification time in hex: no extra file or hashing, and it
	// changes on every rewrite (the rename carries the new file's mtime). Content hashes
	// for clients are kept in database rows, not here.
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime().UTC(),
		ETag: strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16)}
}

// Get opens the file and seeks to the range.
func (l *Local) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	if err := checkRange(rng); err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, Info{}, readErr(key, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, Info{}, readErr(key, err)
	}
	inf := info(key, fi)
	rc, err := FileRange(f, fi.Size(), rng)
	if err != nil {
		f.Close()
		if errors.Is(err, ErrInvalidRange) {
			return nil, inf, err
		}
		return nil, inf, readErr(key, err)
	}
	return rc, inf, nil
}

// Filer is implemented by readers of a local file, such as Local.Get's: File returns
// the file positioned at the first byte to read. Servers can hand it to the kernel
// (io.Copy to a net/http ResponseWriter through io.LimitReader uses sendfile) instead
// of copying through user space; they must limit it to the length they expect.
type Filer interface {
	File() *os.File
}

// FileRange turns an open file of size bytes into a reader of rng (nil: all of it).
// Without a range it returns f itself; with one, f seeked to the offset behind a
// reader that stops after the range and implements Filer. Closing it closes f. A range
// starting at or beyond size is ErrInvalidRange; on any error f is left open.
func FileRange(f *os.File, size int64, rng *Range) (io.ReadCloser, error) {
	if rng == nil {
		return f, nil
	}
	if err := checkRange(rng); err != nil {
		return nil, err
	}
	if rng.Offset >= size {
		return nil, fmt.Errorf("%w: offset %d of %d bytes", ErrInvalidRange, rng.Offset, size)
	}
	if _, err := f.Seek(rng.Offset, io.SeekStart); err != nil {
		return nil, err
	}
	n := size - rng.Offset
	if rng.Length > 0 && rng.Length < n {
		n = rng.Length
	}
	return &fileRange{LimitedReader: io.LimitedReader{R: f, N: n}, f: f}, nil
}

type fileRange struct {
	io.LimitedReader
	f *os.File
}

func (r *fileRange) File() *os.File { return r.f }
func (r *fileRange) Close() error   { return r.f.Close() }

type readCloser struct {
	io.Reader
	io.Closer
}

// Stat returns the object's info.
func (l *Local) Stat(_ context.Context, key string) (Info, error) {
	p, err := l.path(key)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err == nil && fi.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return Info{}, readErr(key, err)
	}
	return info(key, fi), nil
}

// Delete removes the file and the directories it leaves empty (never the root).
func (l *Local) Delete(_ context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("%w: delete %s: %w", ErrUnavailable, key, err)
	}
	for dir := filepath.Dir(p); dir != l.root && strings.HasPrefix(dir, l.root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or raced with a Put): stop
			break
		}
	}
	return nil
}

// List walks the directory the prefix names and returns keys in byte order.
func (l *Local) List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, bool, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		limit = 1000
	}
	// Walk only the deepest directory the prefix names.
	base := l.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		base = filepath.Join(l.root, filepath.FromSlash(prefix[:i]))
	}
	var keys []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // prefix directory absent, or removed while walking
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) || d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		k := filepath.ToSlash(rel)
		if strings.HasPrefix(k, prefix) && k > startAfter {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, fmt.Errorf("%w: list %s: %w", ErrUnavailable, prefix, err)
	}
	// WalkDir orders by path components, and '/' sorts after '-' and '.', so sort keys.
	sort.Strings(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]Info, 0, len(keys))
	for _, k := range keys {
		fi, err := os.Stat(filepath.Join(l.root, filepath.FromSlash(k)))
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, info(k, fi))
	}
	return out, more, nil
}

// Check verifies the root is a writable directory.
func (l *Local) Check(context.Context) error {
	fi, err := os.Stat(l.root)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnavailable, l.root)
	}
	f, err := os.CreateTemp(l.root, tmpPrefix+"check-")
	if err != nil {
		return fmt.Errorf("%w: %s is not writable: %v", ErrUnavailable, l.root, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
