package blob_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	root := t.TempDir()
	outside := t.TempDir()
	s, err := blob.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	// A symlinked directory inside the root must not become a way out.
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	err = s.Put(context.Background(), "link/x", bytes.NewReader([]byte("x")), 1, "")
	if !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("write through symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("file written outside the root")
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
		t.Logf("%s during outage: %v after %v", name, errors.Unwrap(err) != nil, took.Round(time.Millisecond))
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
	bad := cfg
	bad.SecretAccessKey = "wrong"
	bad.Bucket = "another-bucket"
	if _, err := blob.NewS3(ctx, bad); err == nil {
		t.Fatal("wrong credentials accepted")
	}
	down := cfg
	down.Endpoint = "http://127.0.0.1:1"
	_, err := blob.NewS3(ctx, down)
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("unreachable endpoint: %v", err)
	}
}
