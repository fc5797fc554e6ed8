package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

type listedVersion struct {
	Version    string    `json:"version"`
	Current    bool      `json:"current"`
	UploadedAt time.Time `json:"uploaded_at"`
}

func listVersions(t *testing.T, c *client, mid int) []listedVersion {
	t.Helper()
	raw := c.do("GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil, "", 200)
	b, _ := json.Marshal(raw["firmware_versions"])
	var vs []listedVersion
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// uploadAll sends every bundle at once and returns the status counts.
func uploadAll(t *testing.T, url, admin string, bundles [][]byte) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for _, b := range bundles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGun
			code, body := raw(t, "POST", url, b, admin, "application/zip")
			mu.Lock()
			codes[code]++
			mu.Unlock()
			if code >= 500 {
				t.Errorf("upload: %d %s", code, body)
			}
		}()
	}
	close(startGun)
	wg.Wait()
	return codes
}

// TestConcurrentFirmwareUploads: 50 simultaneous uploads of one version to one model, then
// 50 simultaneous uploads of different versions with MAX_FIRMWARES=3. No 500s; afterwards
// exactly the expected versions exist, each with objects matching the bytes sent, the outbox
// drains and fsck (grace 0) is clean.
func TestConcurrentFirmwareUploads(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		base := proctest.Env(env, "MAX_FIRMWARES=3", "DECODE_WORKERS=0", "FSCK_INTERVAL=0", "LOG_LEVEL=warn")
		p := proctest.Start(t, base)
		c := &client{t: t, url: p.URL, token: adminToken(t, p)}
		admin := "Bearer " + c.token

		// Same version, 50 times.
		m := c.do("POST", "/api/device-models", []byte(`{"code":"same","name":"Same"}`), "", 201)
		mid := int(m["id"].(float64))
		one := bundletest.BuildCase(t, "same", "esp32c3", bundletest.Options{Version: "1.0.0"})
		same := make([][]byte, 50)
		for i := range same {
			same[i] = one
		}
		start := time.Now()
		codes := uploadAll(t, fmt.Sprintf("%s/api/device-models/%d/firmware", p.URL, mid), admin, same)
		if codes[200]+codes[201] != 50 {
			t.Errorf("same version x50: statuses %v, want all 2xx", codes)
		}
		vs := listVersions(t, c, mid)
		if len(vs) != 1 || vs[0].Version != "1.0.0" || !vs[0].Current {
			t.Errorf("same version x50: history %+v", vs)
		}
		members := bundleMembers(t, "same", one)
		for art, want := range members {
			if got := download(t, p.URL, admin, fmt.Sprintf("/api/device-models/%d/firmware-versions/1.0.0/%s", mid, art)); !bytes.Equal(got, want) {
				t.Errorf("same version: %s differs", art)
			}
		}
		t.Logf("50 uploads of one version: %v in %v", codes, time.Since(start).Round(time.Millisecond))

		// 50 different versions.
		m = c.do("POST", "/api/device-models", []byte(`{"code":"many","name":"Many"}`), "", 201)
		mid = int(m["id"].(float64))
		diff, byVersion := manyBundles(t)
		start = time.Now()
		codes = uploadAll(t, fmt.Sprintf("%s/api/device-models/%d/firmware", p.URL, mid), admin, diff)
		if codes[200]+codes[201] != 50 {
			t.Errorf("different versions x50: statuses %v, want all 2xx", codes)
		}
		vs = listVersions(t, c, mid)
		// Upload times are taken under the model lock, so they follow commit order: the
		// current version (the last commit) is the newest and retention leaves exactly 3.
		sort.Slice(vs, func(i, j int) bool { return vs[i].UploadedAt.After(vs[j].UploadedAt) })
		if len(vs) != 3 || !vs[0].Current || vs[1].Current || vs[2].Current {
			t.Errorf("different versions x50 with MAX_FIRMWARES=3: history %+v, want 3 with the newest current", vs)
		}
		for _, v := range vs {
			for art, want := range bundleMembers(t, "many", byVersion[v.Version]) {
				if got := download(t, p.URL, admin, fmt.Sprintf("/api/device-models/%d/firmware-versions/%s/%s", mid, v.Version, art)); !bytes.Equal(got, want) {
					t.Errorf("%s %s differs", v.Version, art)
				}
			}
		}
		t.Logf("50 uploads of different versions: %v in %v; history %d versions", codes, time.Since(start).Round(time.Millisecond), len(vs))

		deadline := time.Now().Add(60 * time.Second)
		for testenv.Count(t, env.DB, "blob_deletions") > 0 {
			if time.Now().After(deadline) {
				t.Fatal("outbox did not drain")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if out, errOut, code := proctest.Run(t, base, "fsck", "--grace", "0s"); code != 0 {
			t.Errorf("fsck: exit %d\n%s%s", code, out, errOut)
		}
		if n := testenv.Count(t, env.DB, "firmware_versions"); n != 1+len(vs) {
			t.Errorf("firmware_versions rows: %d, want %d", n, 1+len(vs))
		}
	})
}

var (
	manyOnce      sync.Once
	manyList      [][]byte
	manyByVersion map[string][]byte
)

// manyBundles builds 50 bundles of model "many" (versions 2.0.0 to 2.49.0) once per test binary.
func manyBundles(t *testing.T) ([][]byte, map[string][]byte) {
	manyOnce.Do(func() {
		start := time.Now()
		manyList = make([][]byte, 50)
		manyByVersion = map[string][]byte{}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < 50; i += 4 {
					manyList[i] = bundletest.BuildCase(t, "many", "esp32c3", bundletest.Options{Version: fmt.Sprintf("2.%d.0", i)})
				}
			}()
		}
		wg.Wait()
		for i, b := range manyList {
			manyByVersion[fmt.Sprintf("2.%d.0", i)] = b
		}
		t.Logf("built 50 bundles in %v", time.Since(start).Round(time.Millisecond))
	})
	return manyList, manyByVersion
}
