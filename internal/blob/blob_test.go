package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/blob/blobtest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestLocalCompliance(t *testing.T) {
	blobtest.RunCompliance(t, func(t *testing.T) blob.Store {
		s, err := blob.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestGofakes3Compliance(t *testing.T) {
	blobtest.RunCompliance(t, func(t *testing.T) blob.Store {
		srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		t.Cleanup(srv.Close)
		s, err := blob.NewS3(context.Background(), blob.S3Config{Endpoint: srv.URL, AccessKeyID: "a", SecretAccessKey: "b", Bucket: "test", PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestVersityGWCompliance(t *testing.T) {
	blobtest.RunCompliance(t, func(t *testing.T) blob.Store {
		s, err := blob.NewS3(context.Background(), testenv.S3(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestLocalRefusesEscapes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := blob.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	// Symlinks planted inside the root (a directory, a file) must not become a way out,
	// including through directories below the link that do not exist yet.
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "file")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"link/x", "link/new/deeper/x", "link/secret", "file"} {
		if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1, ""); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("put %s: %v", k, err)
		}
		if _, _, err := s.Get(ctx, k, nil); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("get %s: %v", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("delete %s: %v", k, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Fatalf("outside dir changed: %v", entries)
	}
	if items, _, err := s.List(ctx, "", "", 10); err != nil || len(items) != 0 {
		t.Fatalf("list follows symlinks: %+v %v", items, err)
	}
	// Names the local backend cannot hold are invalid keys, not outages.
	for _, k := range []string{".tmp-x", "a/.tmp-y", "a/" + strings.Repeat("n", 256)} {
		if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1, ""); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("put %s: %v", k, err)
		}
	}
}

func TestLocalDeleteRemovesEmptyDirs(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := blob.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a/b/c/one", "a/b/two"} {
		if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "a/b/c/one"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a", "b", "c")); !os.IsNotExist(err) {
		t.Fatalf("empty dir kept: %v", err)
	}
	if err := s.Delete(ctx, "a/b/two"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil || len(entries) != 0 {
		t.Fatalf("root after deletes: %v %v", entries, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("root removed: %v", err)
	}
}

func TestValidKey(t *testing.T) {
	for _, k := range []string{"a", "firmware/esp32_cam/1.2.3+build.4/firmware.bin", "coredumps/ab12cd34/9.dmp",
		".hidden", "a/..b/c..", "sp ace", strings.Repeat("k/", 511) + "kk", "ünïcode"} {
		if err := blob.ValidKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range []string{"", "..", "a/..", "./a", "/a", "a/", "a//b", "a\\b", "a\x00", "\x7f", "\xc3", strings.Repeat("k", 1025)} {
		if err := blob.ValidKey(k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("%q accepted", k)
		}
	}
}

func TestVersityGWMissingFailsWithInstallCommand(t *testing.T) {
	t.Setenv("VERSITYGW_BIN", filepath.Join(t.TempDir(), "nope"))
	_, err := testenv.VersityGWBin()
	if err == nil || !strings.Contains(err.Error(), "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0") {
		t.Fatalf("error without install command: %v", err)
	}
}

func TestS3OutageIsUnavailableAndRecovers(t *testing.T) {
	cfg, stop, start := testenv.StoppableS3(t)
	ctx := context.Background()
	s, err := blob.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("v"), 100000)
	if err := s.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), ""); err != nil {
		t.Fatal(err)
	}
	stop()
	ops := map[string]func() error{
		"put":    func() error { return s.Put(ctx, "k2", bytes.NewReader([]byte("v")), 1, "") },
		"get":    func() error { _, _, err := s.Get(ctx, "k", nil); return err },
		"range":  func() error { _, _, err := s.Get(ctx, "k", &blob.Range{Offset: 1, Length: 1}); return err },
		"stat":   func() error { _, err := s.Stat(ctx, "k"); return err },
		"list":   func() error { _, _, err := s.List(ctx, "", "", 10); return err },
		"delete": func() error { return s.Delete(ctx, "k") },
		"check":  func() error { return s.Check(ctx) },
	}
	for name, op := range ops {
		began := time.Now()
		err := op()
		took := time.Since(began)
		if !errors.Is(err, blob.ErrUnavailable) {
			t.Errorf("%s during outage: %v", name, err)
		}
		// Bounded retries: a refused connection must not keep callers for long.
		if took > 10*time.Second {
			t.Errorf("%s during outage took %v", name, took)
		}
		t.Logf("%s during outage failed after %v", name, took.Round(time.Millisecond))
	}
	start()
	if err := s.Put(ctx, "k2", bytes.NewReader([]byte("v")), 1, ""); err != nil {
		t.Fatalf("put after recovery: %v", err)
	}
	if got, err := s.Stat(ctx, "k"); err != nil || got.Size != int64(len(data)) {
		t.Fatalf("data lost across restart: %+v %v", got, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after recovery: %v", err)
	}
}

func TestNewS3CreatesBucketOrFailsClearly(t *testing.T) {
	cfg := testenv.S3(t)
	ctx := context.Background()
	if _, err := blob.NewS3(ctx, cfg); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	if _, err := blob.NewS3(ctx, cfg); err != nil {
		t.Fatalf("existing bucket: %v", err)
	}
	// host:port without a scheme means http unless UseSSL.
	plain := cfg
	plain.Endpoint = strings.TrimPrefix(cfg.Endpoint, "http://")
	if _, err := blob.NewS3(ctx, plain); err != nil {
		t.Fatalf("endpoint without scheme: %v", err)
	}
	bad := cfg
	bad.SecretAccessKey = "wrong"
	bad.Bucket = "another-bucket"
	if _, err := blob.NewS3(ctx, bad); !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "another-bucket") {
		t.Fatalf("wrong credentials: %v", err)
	}
	invalid := cfg
	invalid.Bucket = "Not_A_Valid_Bucket"
	_, err := blob.NewS3(ctx, invalid)
	if err == nil || !strings.Contains(err.Error(), "bucket Not_A_Valid_Bucket at "+cfg.Endpoint) {
		t.Fatalf("invalid bucket name: %v", err)
	}
	t.Logf("invalid bucket: %v", err)
	down := cfg
	down.Endpoint = "127.0.0.1:1"
	began := time.Now()
	_, err = blob.NewS3(ctx, down)
	if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "http://127.0.0.1:1") || time.Since(began) > 10*time.Second {
		t.Fatalf("unreachable endpoint: %v after %v", err, time.Since(began))
	}
	t.Logf("unreachable: %v", err)
}

// Local reads expose their file (for sendfile): the whole object is the *os.File
// itself, a range a Filer whose file is positioned at the range's first byte.
func TestLocalGetExposesFile(t *testing.T) {
	ctx := context.Background()
	l, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if err := l.Put(ctx, "a/b", bytes.NewReader(data), int64(len(data)), ""); err != nil {
		t.Fatal(err)
	}
	rc, _, err := l.Get(ctx, "a/b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.(*os.File); !ok {
		t.Fatalf("whole object: %T, want *os.File", rc)
	}
	rc.Close()
	rc, _, err = l.Get(ctx, "a/b", &blob.Range{Offset: 4321, Length: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	fr, ok := rc.(blob.Filer)
	if !ok {
		t.Fatalf("range: %T does not expose its file", rc)
	}
	if off, err := fr.File().Seek(0, io.SeekCurrent); err != nil || off != 4321 {
		t.Fatalf("file offset %d, %v", off, err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data[4321:4421]) {
		t.Fatalf("range content: %q, %v", got, err)
	}
}

// A server without DeleteObjects (Google Cloud Storage's XML API) gets single deletes,
// and is not asked again.
func TestS3DeleteManyWithoutDeleteObjects(t *testing.T) {
	ctx := context.Background()
	fake := gofakes3.New(s3mem.New()).Server()
	var batches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Query().Has("delete") {
			batches.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>not here</Message></Error>`)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s, err := blob.NewS3(ctx, blob.S3Config{Endpoint: srv.URL, AccessKeyID: "a", SecretAccessKey: "b", Bucket: "test", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		keys := []string{"a/1", "a/2", "a/3"}
		for _, k := range keys {
			if err := s.Put(ctx, k, strings.NewReader(k), int64(len(k)), ""); err != nil {
				t.Fatal(err)
			}
		}
		for i, err := range blob.DeleteMany(ctx, s, append(keys, "no/such")) {
			if err != nil {
				t.Fatalf("round %d, key %d: %v", round, i, err)
			}
		}
		items, _, err := s.List(ctx, "", "", 10)
		if err != nil || len(items) != 0 {
			t.Fatalf("round %d left %v (%v)", round, items, err)
		}
	}
	if n := batches.Load(); n != 1 {
		t.Fatalf("DeleteObjects tried %d times, want once", n)
	}
}

// A failing DeleteObjects request fails every key in it, as unavailable.
func TestS3DeleteManyOutage(t *testing.T) {
	ctx := context.Background()
	fake := gofakes3.New(s3mem.New()).Server()
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s, err := blob.NewS3(ctx, blob.S3Config{Endpoint: srv.URL, AccessKeyID: "a", SecretAccessKey: "b", Bucket: "test", PathStyle: true},
		func(o *s3.Options) { o.Retryer = aws.NopRetryer{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a/1", strings.NewReader("x"), 1, ""); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	errs := blob.DeleteMany(ctx, s, []string{"a/1", "a/2"})
	for i, err := range errs {
		if !errors.Is(err, blob.ErrUnavailable) {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	down.Store(false)
	if _, err := s.Stat(ctx, "a/1"); err != nil {
		t.Fatalf("object gone after a failed delete: %v", err)
	}
}

// downStore fails every Delete, as a store that is down.
type downStore struct {
	blob.Store
	calls atomic.Int32
}

func (d *downStore) Delete(ctx context.Context, key string) error {
	d.calls.Add(1)
	return fmt.Errorf("delete %s: %w", key, blob.ErrUnavailable)
}

// Deleting one by one stops starting requests after a failure (the store is down), and
// every key still gets an error.
func TestDeleteManyStopsAfterAFailure(t *testing.T) {
	local, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &downStore{Store: local}
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("k/%d", i)
	}
	errs := blob.DeleteMany(context.Background(), d, keys)
	for i, err := range errs {
		if !errors.Is(err, blob.ErrUnavailable) {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	// At most the 8 already in flight when the first failed.
	if n := d.calls.Load(); n < 1 || n > 8 {
		t.Fatalf("%d deletes tried for 100 keys on a store that is down", n)
	}
}
