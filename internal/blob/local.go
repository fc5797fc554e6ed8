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
)

// tmpPrefix marks in-progress writes; List skips them and fsck may remove stale ones.
const tmpPrefix = ".tmp-"

// Local stores objects as files under a root directory.
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
	// Resolve symlinks once so the escape check compares real paths.
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, err
	}
	return &Local{root: real}, nil
}

// Root is the directory holding the objects.
func (l *Local) Root() string { return l.root }

func (l *Local) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	p := filepath.Join(l.root, filepath.FromSlash(key))
	if !strings.HasPrefix(p, l.root+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %q escapes the store", ErrInvalidKey, key)
	}
	// A symlinked directory inside the root must not lead outside it.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil && dir != l.root && !strings.HasPrefix(dir, l.root+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %q escapes the store", ErrInvalidKey, key)
	}
	return p, nil
}

func ioErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Put writes to a temp file in the target directory, fsyncs, renames over the target
// and fsyncs the directory, so a crash leaves either the old or the new object.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64, _ string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ioErr(err)
	}
	rnd := make([]byte, 8)
	_, _ = rand.Read(rnd)
	tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return ioErr(err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, io.LimitReader(r, size+1)})
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if n != size {
		return fmt.Errorf("write %s: got %d bytes, declared %d", key, n, size)
	}
	if err := f.Sync(); err != nil {
		return ioErr(err)
	}
	if err := f.Close(); err != nil {
		return ioErr(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return ioErr(err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
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
	// The ETag is derived from size and modification time: cheap, and it changes on
	// every rewrite (rename gives a new mtime) — the service keeps content hashes in rows.
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime().UTC(),
		ETag: strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16)}
}

// Get opens the file and seeks to the range.
func (l *Local) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, Info{}, ioErr(err)
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fs.ErrNotExist
		}
		return nil, Info{}, ioErr(err)
	}
	inf := info(key, fi)
	if rng == nil {
		return f, inf, nil
	}
	if rng.Offset < 0 || rng.Offset >= fi.Size() && !(rng.Offset == 0 && fi.Size() == 0) {
		f.Close()
		return nil, inf, fmt.Errorf("%w: offset %d of %d bytes", ErrInvalidRange, rng.Offset, fi.Size())
	}
	if _, err := f.Seek(rng.Offset, io.SeekStart); err != nil {
		f.Close()
		return nil, inf, ioErr(err)
	}
	n := fi.Size() - rng.Offset
	if rng.Length >= 0 && rng.Length < n {
		n = rng.Length
	}
	return readCloser{io.LimitReader(f, n), f}, inf, nil
}

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
	if err != nil {
		return Info{}, ioErr(err)
	}
	if fi.IsDir() {
		return Info{}, ioErr(fs.ErrNotExist)
	}
	return info(key, fi), nil
}

// Delete removes the file and the directories it leaves empty (never the root).
func (l *Local) Delete(_ context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ioErr(err)
	}
	for dir := filepath.Dir(p); dir != l.root && strings.HasPrefix(dir, l.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// List walks the directory tree in lexical key order.
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
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tmpPrefix) {
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
		return nil, false, ioErr(err)
	}
	// WalkDir orders by path components; '/' sorts differently from other bytes, so sort keys.
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
