package storagecopy_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/storagecopy"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

var objects = map[string]string{
	"firmware/m/1.0.0/firmware.bin": strings.Repeat("bin", 1000),
	"firmware/m/1.0.0/sdkconfig":    "CONFIG_X=y\n",
	"coredumps/abcd2345/7.dmp":      strings.Repeat("dump", 5000),
	"coredumps/abcd2345/8.dmp":      "",
}

func put(t *testing.T, s blob.Store, key, data string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(data), int64(len(data)), ""); err != nil {
		t.Fatal(err)
	}
}

func same(t *testing.T, s blob.Store) {
	t.Helper()
	for k, want := range objects {
		rc, _, err := s.Get(context.Background(), k, nil)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, []byte(want)) {
			t.Fatalf("%s: %d bytes, want %d", k, len(got), len(want))
		}
	}
}

func TestCopyLocalToS3AndBack(t *testing.T) {
	ctx := context.Background()
	local, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range objects {
		put(t, local, k, v)
	}
	s3, err := blob.NewS3(ctx, testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}

	// A dry run to a destination that does not exist yet writes nothing.
	res, err := storagecopy.Copy(ctx, local, nil, storagecopy.Options{DryRun: true})
	if err != nil || res.Copied != len(objects) {
		t.Fatalf("dry run: %+v %v", res, err)
	}

	res, err = storagecopy.Copy(ctx, local, s3, storagecopy.Options{})
	if err != nil || res.Copied != len(objects) || res.Present != 0 || len(res.Failed) != 0 {
		t.Fatalf("copy: %+v %v", res, err)
	}
	same(t, s3)

	// Idempotent: nothing is copied again.
	res, err = storagecopy.Copy(ctx, local, s3, storagecopy.Options{})
	if err != nil || res.Copied != 0 || res.Present != len(objects) {
		t.Fatalf("second copy: %+v %v", res, err)
	}

	// Resumable: a missing object and one with the same size but other bytes are copied.
	if err := s3.Delete(ctx, "coredumps/abcd2345/7.dmp"); err != nil {
		t.Fatal(err)
	}
	put(t, s3, "firmware/m/1.0.0/sdkconfig", "CONFIG_Y=n\n")
	res, err = storagecopy.Copy(ctx, local, s3, storagecopy.Options{})
	if err != nil || res.Copied != 2 || res.Present != len(objects)-2 {
		t.Fatalf("resumed copy: %+v %v", res, err)
	}
	same(t, s3)

	// And back to a new local directory.
	back, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err = storagecopy.Copy(ctx, s3, back, storagecopy.Options{})
	if err != nil || res.Copied != len(objects) {
		t.Fatalf("copy back: %+v %v", res, err)
	}
	same(t, back)
}
