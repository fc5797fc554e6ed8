package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestStorageCopyFromTheEmbeddedDefaultToS3(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "firmware", "m", "1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "firmware", "m", "1.0.0", "firmware.bin"), []byte("image bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.S3(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=sqlite:" + filepath.Join(t.TempDir(), "x.db"),
		"S3_ENDPOINT_URL=" + cfg.Endpoint, "S3_ACCESS_KEY_ID=" + cfg.AccessKeyID, "S3_SECRET_ACCESS_KEY=" + cfg.SecretAccessKey, "S3_BUCKET_NAME=" + cfg.Bucket}
	out, errOut, code := proctest.Run(t, env, "storage", "copy", "--from", "local:"+dir, "--to", "s3", "--dry-run")
	if code != 0 || !strings.Contains(out, "Would copy firmware/m/1.0.0/firmware.bin") || bucketListing(t, cfg) != "no bucket\n" {
		t.Fatalf("dry run: %d %s %s", code, out, errOut)
	}
	out, errOut, code = proctest.Run(t, env, "storage", "copy", "--from", "local:"+dir, "--to", "s3")
	if code != 0 || !strings.Contains(out, "copied: 1 (11 bytes), already present: 0, failed: 0") {
		t.Fatalf("copy: %d %s %s", code, out, errOut)
	}
	out, _, code = proctest.Run(t, env, "storage", "copy", "--from", "local:"+dir, "--to", "s3")
	if code != 0 || !strings.Contains(out, "copied: 0 (0 bytes), already present: 1") {
		t.Fatalf("second copy: %d %s", code, out)
	}
	back := t.TempDir()
	if out, errOut, code := proctest.Run(t, env, "storage", "copy", "--from", "s3", "--to", "local:"+back); code != 0 {
		t.Fatalf("copy back: %d %s %s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(back, "firmware", "m", "1.0.0", "firmware.bin")); err != nil || string(b) != "image bytes" {
		t.Fatalf("copied back: %q %v", b, err)
	}
}
