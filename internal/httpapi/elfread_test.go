package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// countingStore counts reads of firmware ELFs.
type countingStore struct {
	blob.Store
	elfGets atomic.Int32
}

func (c *countingStore) Get(ctx context.Context, key string, rng *blob.Range) (io.ReadCloser, blob.Info, error) {
	if strings.HasSuffix(key, "/firmware.elf") {
		c.elfGets.Add(1)
	}
	return c.Store.Get(ctx, key, rng)
}

// TestWarmELFIsNotReadAgain: once the native decoder holds a firmware's symbol index,
// later dumps of that firmware are decoded without reading its ELF (megabytes) again.
func TestWarmELFIsNotReadAgain(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		cs := &countingStore{Store: env.Store}
		env.Store = cs
		s := apitest.Start(t, env)
		startWorkers(t, s)
		mid := newModel(t, s, "warm")
		key, secret := newDevice(t, s, mid)
		did := deviceIDByKey(t, s, key)
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "warm", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		dump, _, task := caseDump(t, "esp32c3")
		for i := 0; i < 3; i++ {
			id := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
			d := waitStatus(t, s, did, id, "PARSED")
			if out, _ := d["parsed_output"].(string); !strings.Contains(out, task) {
				t.Fatalf("dump %d: report lacks the crashed task", i)
			}
		}
		if n := cs.elfGets.Load(); n != 1 {
			t.Errorf("ELF read %d times for 3 dumps of one firmware, want 1", n)
		}
	})
}
