package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// getCounter counts Gets per key on the way to the real store.
type getCounter struct {
	blob.Store
	mu   sync.Mutex
	gets map[string]int
}

func (g *getCounter) Get(ctx context.Context, key string, rng *blob.Range) (io.ReadCloser, blob.Info, error) {
	g.mu.Lock()
	g.gets[key]++
	g.mu.Unlock()
	return g.Store.Get(ctx, key, rng)
}

func (g *getCounter) count(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gets[key]
}

// With STORAGE_BACKEND=s3 (PostgreSQL + versitygw), firmware downloads are fetched
// from S3 once into FIRMWARE_CACHE_DIR and then served from the local file, whole or
// ranged, with exactly the stored bytes; a broken cache falls back to streaming.
func TestFirmwareDownloadsFromCache(t *testing.T) {
	ctx := context.Background()
	env := testenv.New(t, "postgres+s3")
	s3 := env.Store
	counter := &getCounter{Store: s3, gets: map[string]int{}}
	env.Store = counter
	cacheDir := filepath.Join(t.TempDir(), "cache")
	s := apitest.Start(t, env, "STORAGE_BACKEND", "s3", "FIRMWARE_CACHE_DIR", cacheDir)
	if s.App.Firmware.Cache == nil {
		t.Fatal("STORAGE_BACKEND=s3 did not enable the firmware cache")
	}

	upload := func(code string) (dev *apitest.Server, mid int, img []byte) {
		t.Helper()
		mid = newModel(t, s, code)
		key, secret := newDevice(t, s, mid)
		dev = s.Basic(key, secret)
		zip := bundletest.BuildCase(t, code, "esp32c6", bundletest.Options{Version: "5.0.0", Image: espimagetest.Options{PadTo: 300000}})
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), zip)
		v := dev.Expect(200, "GET", "/api/iot/firmware-version", nil).Map(t)
		r := dev.Expect(200, "GET", "/api/iot/firmware", nil)
		sum := sha256.Sum256(r.Body)
		if hex.EncodeToString(sum[:]) != v["sha256"] || len(r.Body) != int(v["size"].(float64)) || r.Header.Get("ETag") != `"`+v["sha256"].(string)+`"` {
			t.Fatalf("%s: downloaded %d bytes with SHA-256 %x, recorded %v", code, len(r.Body), sum, v)
		}
		return dev, mid, r.Body
	}
	checkDownloads := func(dev *apitest.Server, mid int, img []byte) {
		t.Helper()
		for _, c := range []*apitest.Server{dev, s.Role("viewer")} {
			p := "/api/iot/firmware"
			if c != dev {
				p = fmt.Sprintf("/api/device-models/%d/firmware", mid)
			}
			if r := c.Expect(200, "GET", p, nil); !bytes.Equal(r.Body, img) || r.Header.Get("Content-Length") != fmt.Sprint(len(img)) {
				t.Fatalf("full download: %d bytes, headers %v", len(r.Body), r.Header)
			}
			for _, rg := range []struct {
				hdr        string
				first, end int // img[first:end]
			}{
				{"bytes=4096-8191", 4096, 8192},
				{"bytes=0-0", 0, 1},
				{"bytes=-100", len(img) - 100, len(img)},
				{fmt.Sprintf("bytes=%d-", len(img)-1), len(img) - 1, len(img)},
				{fmt.Sprintf("bytes=200000-%d", len(img)+500), 200000, len(img)},
			} {
				r := c.Expect(206, "GET", p, nil, "Range", rg.hdr)
				if !bytes.Equal(r.Body, img[rg.first:rg.end]) || r.Header.Get("Content-Length") != fmt.Sprint(rg.end-rg.first) ||
					r.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", rg.first, rg.end-1, len(img)) {
					t.Fatalf("%s: %d bytes, headers %v", rg.hdr, len(r.Body), r.Header)
				}
			}
			c.Expect(416, "GET", p, nil, "Range", fmt.Sprintf("bytes=%d-", len(img)))
		}
	}

	dev, mid, img := upload("lamp")
	bin := "firmware/lamp/5.0.0/firmware.bin"
	if n := counter.count(bin); n != 1 {
		t.Fatalf("first download read %s %d times from S3, want 1 (the cache fill)", bin, n)
	}
	sum := sha256.Sum256(img)
	if b, err := os.ReadFile(filepath.Join(cacheDir, hex.EncodeToString(sum[:]))); err != nil || !bytes.Equal(b, img) {
		t.Fatalf("cache file: %v", err)
	}
	checkDownloads(dev, mid, img)
	if n := counter.count(bin); n != 1 {
		t.Fatalf("cached downloads read %s %d more times from S3", bin, n-1)
	}

	// Served from disk: the object can even vanish from S3 behind the service's back.
	if err := s3.Delete(ctx, bin); err != nil {
		t.Fatal(err)
	}
	if r := dev.Expect(200, "GET", "/api/iot/firmware", nil); !bytes.Equal(r.Body, img) {
		t.Fatal("cached download after the S3 object was deleted")
	}
	// An artifact that was never downloaded is not cached: the same deletion is a 404.
	if err := s3.Delete(ctx, "firmware/lamp/5.0.0/firmware.elf"); err != nil {
		t.Fatal(err)
	}
	s.Expect(404, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions/5.0.0/firmware.elf", mid), nil)

	// A broken cache (its directory replaced by a file) never fails a download that S3
	// can serve: it streams from the store as without the cache.
	if err := os.RemoveAll(cacheDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cacheDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dev2, mid2, img2 := upload("fan")
	checkDownloads(dev2, mid2, img2)
	if n := counter.count("firmware/fan/5.0.0/firmware.bin"); n < 2 {
		t.Fatalf("uncacheable firmware read %d times from S3, want every download", n)
	}
}
