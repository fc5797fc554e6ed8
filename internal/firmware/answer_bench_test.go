package firmware_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// beforeRollouts is the device answer's query before pins and rollouts: the baseline.
const beforeRollouts = `SELECT m.id, m.code, m.name, m.firmware_version, fv.id IS NOT NULL, fv.bin_size, fv.bin_sha256
		FROM devices d JOIN device_models m ON m.id = d.device_model_id
		LEFT JOIN firmware_versions fv ON fv.device_model_id = m.id AND fv.version = m.firmware_version
		WHERE d.id = $1`

// BenchmarkDeviceAnswer: one uncached device answer (what a device costs once per
// DEVICE_CACHE_TTL) against the query it replaced, in the same run: plain, and with an
// active rollout and pins on the model. Compare ns/op of "now…" with "before".
func BenchmarkDeviceAnswer(b *testing.B) {
	for _, name := range testenv.Configs {
		b.Run(name, func(b *testing.B) {
			env := testenv.New(b, name)
			f := newFixture(b, env, 5)
			ctx := context.Background()
			m := f.model(b, "bench")
			f.upload(b, "bench", "1.0.0")
			z, _ := build(b, "bench", "1.1.0")
			if _, err := f.s.Upload(ctx, firmware.ModelID(m.ID), body(z), false, false); err != nil {
				b.Fatal(err)
			}
			var ids []int64
			if err := f.devices.CreateDevices(ctx, m.ID, 200, "{}", func(nd []devices.NewDevice) error {
				for _, x := range nd {
					ids = append(ids, x.Device.ID)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			run := func(b *testing.B, fn func(id int64) error) {
				i := 0
				for b.Loop() {
					if err := fn(ids[i%len(ids)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			}
			before := func(id int64) error {
				var (
					mid     int64
					code, n string
					fw, sha sql.NullString
					found   bool
					size    sql.NullInt64
				)
				return env.DB.QueryRowContext(ctx, beforeRollouts, id).Scan(&mid, &code, &n, &fw, &found, &size, &sha)
			}
			now := func(id int64) error {
				_, _, err := f.s.CurrentOfDevice(ctx, id)
				return err
			}
			b.Run("before", func(b *testing.B) { run(b, before) })
			b.Run("now", func(b *testing.B) { run(b, now) })
			testenv.MustExec(b, env.DB, `INSERT INTO rollouts (model_id, version, previous_version, state, stages, stage, percent, max_crash_free_drop,
				min_devices, max_new_group_devices, on_halt, started_at, stage_started_at, updated_at)
				VALUES ($1, '1.1.0', '1.0.0', 'active', '[{"percent":50,"min_minutes":0},{"percent":100,"min_minutes":0}]', 0, 50, 2, 20, 3, 'revert',
				CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`, m.ID)
			for _, id := range ids[:20] {
				testenv.MustExec(b, env.DB, `INSERT INTO device_firmware_pins (device_id, model_id, version, pinned_at) VALUES ($1, $2, '1.0.0', CURRENT_TIMESTAMP)`, id, m.ID)
			}
			b.Run("now-rollout-and-pins", func(b *testing.B) { run(b, now) })
			b.Run("before-again", func(b *testing.B) { run(b, before) })
		})
	}
}
