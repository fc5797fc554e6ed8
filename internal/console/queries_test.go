package console_test

import (
	"fmt"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// Every page runs the same number of statements with 2 rows to list as with 40: no
// query per row (N+1). Counted by db.DB.Statements around each page view.
func TestPagesRunAFixedNumberOfQueries(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing", "CONSOLE_OVERVIEW_CACHE_TTL", "0", "CONSOLE_PAGE_SIZE", "100",
			"COREDUMP_UPLOADS_PER_HOUR", "1000", "MAX_COREDUMPS", "1000")
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "qc", "name": "QC"}).Map(t)["id"].(float64))
		addDevices := func(n int) (last int) {
			for i := 0; i < n; i++ {
				last = int(s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)["id"].(float64))
			}
			return last
		}
		addDumps := func(dev, n int) (last int) {
			for i := 0; i < n; i++ {
				last = int(s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev, "chip": "esp32",
					"firmware_version": "1.0.0", "size": 10, "parse_status": "PARSED"}).Map(t)["id"].(float64))
			}
			return last
		}
		dev := addDevices(2)
		cid := addDumps(dev, 2)
		// Crash groups with real decoded dumps: lamp's group gains devices, and more groups come.
		lamp := decodedCrashes(t, s, "lamp", 2)
		c := signIn(t, s, "admin")
		pages := []string{"/", "/models", fmt.Sprintf("/models/%d", mid), "/devices", fmt.Sprintf("/devices?model=%d&q=a&running=1.0.0&seen=24h", mid),
			fmt.Sprintf("/devices/%d", dev), fmt.Sprintf("/devices/%d/coredumps/%d", dev, cid), "/tokens", "/audit",
			"/crash-groups", fmt.Sprintf("/crash-groups?model=%d&status=open&version=1.0.0&sort=devices", lamp.model),
			fmt.Sprintf("/crash-groups/%d", lamp.group)}
		count := func() map[string]int64 {
			out := map[string]int64{}
			for _, p := range pages {
				before := env.DB.Statements()
				c.get(p).must(t, 200)
				out[p] = env.DB.Statements() - before
			}
			return out
		}
		small := count()
		addDevices(38)
		addDumps(dev, 38)
		for i := 0; i < 5; i++ { // more models, each with a device that crashed
			m := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": fmt.Sprintf("qc%d", i), "name": "QC"}).Map(t)["id"].(float64))
			d := int(s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m, "config": `{}`}).Map(t)["id"].(float64))
			addDumps(d, 1)
		}
		moreCrashes(t, s, &lamp, 3)      // lamp's group: more devices, dumps and samples
		decodedCrashes(t, s, "lamp2", 1) // and another model's group
		otherSignature(t, s, env, int64(lamp.dumps[0]))
		for i := 0; i < 20; i++ { // more tokens and audit entries too
			s.Expect(201, "POST", "/api/tokens", map[string]any{"name": fmt.Sprintf("qc-%d", i), "role": "viewer"})
		}
		large := count()
		for _, p := range pages {
			if small[p] != large[p] || small[p] == 0 {
				t.Errorf("%s: %d statements with few rows, %d with many", p, small[p], large[p])
			}
		}
		t.Logf("statements per page: %v", large)
	})
}
