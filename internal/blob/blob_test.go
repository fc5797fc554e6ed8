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
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestGofakes3Compliance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
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
	blobtest.Run(t, func(t *testing.T) blob.Store {
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
	srv, cfg := testenv.StoppableS3(t)
	ctx := context.Background()
	s, err := blob.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("v")), 1, ""); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	if err := s.Put(ctx, "k2", bytes.NewReader([]byte("v")), 1, ""); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("put during outage: %v", err)
	}
	if _, _, err := s.Get(ctx, "k", nil); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("get during outage: %v", err)
	}
	if _, err := s.Stat(ctx, "k"); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("stat during outage: %v", err)
	}
	if _, _, err := s.List(ctx, "", "", 10); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("list during outage: %v", err)
	}
	if err := s.Check(ctx); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("check during outage: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Logf("outage detection took %v", d) // reported, not asserted: machines are noisy
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k2", bytes.NewReader([]byte("v")), 1, ""); err != nil {
		t.Fatalf("put after recovery: %v", err)
	}
	if _, err := s.Stat(ctx, "k"); err != nil {
		t.Fatalf("data lost across restart: %v", err)
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
