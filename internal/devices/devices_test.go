package devices

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/naming"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

const nameSchema = `{"type": "object", "required": ["deviceName"], "properties": {"deviceName": {"type": "string", "minLength": 2}}}`

// TestDeviceConfigValidatedAgainstSchema: a device's config must be one JSON value
// that the model's schema accepts, on create and update; the display fields come from it.
func TestDeviceConfigValidatedAgainstSchema(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", ptr(nameSchema))
		free := f.model(t, "free", nil)
		for _, config := range []string{`{}`, `{"deviceName": "x"}`, `{"deviceName": 7}`, `not json`, `{"deviceName": "ok"} {}`} {
			if _, _, err := f.s.CreateDevice(ctx, m.ID, config); !isKind(err, apperr.Validation) {
				t.Errorf("config %s: %v, want a validation error", config, err)
			}
		}
		if n := testenv.Count(t, d, "devices"); n != 0 {
			t.Fatalf("%d devices stored with refused configs", n)
		}
		if _, _, err := f.s.CreateDevice(ctx, free.ID, `{"a": 1} trailing`); !isKind(err, apperr.Validation) {
			t.Fatalf("non-JSON config without a schema: %v", err)
		}
		if _, _, err := f.s.CreateDevice(ctx, 9999, `{}`); !isKind(err, apperr.NotFound) {
			t.Fatalf("device of a missing model: %v", err)
		}

		dev, _ := f.device(t, m.ID, `{"deviceName": "Kitchen", "deviceEntityId": "light.kitchen", "enableOTA": false}`)
		if dev.DeviceName == nil || *dev.DeviceName != "Kitchen" || dev.DeviceEntityID == nil || *dev.DeviceEntityID != "light.kitchen" ||
			dev.EnableOTA == nil || *dev.EnableOTA || !dev.Active || dev.ModelCode != "lamp" {
			t.Fatalf("created device %+v", dev)
		}
		if _, err := f.s.UpdateDevice(ctx, dev.ID, `{"deviceName": "K"}`, true); !isKind(err, apperr.Validation) {
			t.Fatalf("update against the schema: %v", err)
		}
		got, _ := f.s.GetDevice(ctx, dev.ID)
		if got.Config != dev.Config || *got.DeviceName != "Kitchen" {
			t.Fatalf("refused update changed the device: %+v", got)
		}
		// A schema changed later applies to the next update.
		if _, err := f.s.UpdateModel(ctx, m.ID, ModelInput{ConfigSchema: ptr(`{"type": "object", "required": ["room"]}`)}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.UpdateDevice(ctx, dev.ID, `{"deviceName": "Kitchen"}`, true); !isKind(err, apperr.Validation) {
			t.Fatalf("update against the model's new schema: %v", err)
		}
		got, err := f.s.UpdateDevice(ctx, dev.ID, `{"room": "k", "deviceName": " "}`, true)
		if err != nil {
			t.Fatal(err)
		}
		if got.DeviceName != nil || got.DeviceEntityID != nil || got.EnableOTA != nil {
			t.Fatalf("display fields not recomputed from the new config: %+v", got)
		}
	})
}

// TestDeviceKeysAndClientID: keys are naming.ValidDeviceKey (they become object-key
// segments) and unique; the client id is iotdevice-{code}-{key}.
func TestDeviceKeysAndClientID(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		k := NewKey()
		if !naming.ValidDeviceKey(k) {
			t.Fatalf("NewKey() = %q, not a valid device key", k)
		}
		seen[k] = true
	}
	if len(seen) < 1990 {
		t.Fatalf("only %d distinct keys in 2000", len(seen))
	}
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp_x", nil)
		a, sa := f.device(t, m.ID, `{}`)
		b, sb := f.device(t, m.ID, `{}`)
		if !naming.ValidDeviceKey(a.Key) || a.Key == b.Key || sa == sb || len(sa) < 43 {
			t.Fatalf("keys %q %q, secrets %q %q", a.Key, b.Key, sa, sb)
		}
		if a.ClientID() != "iotdevice-lamp_x-"+a.Key {
			t.Fatalf("client id %q", a.ClientID())
		}
		if secretHash(t, d, a.ID) != hashOf(sa) {
			t.Fatal("the stored hash is not the hasher's of the returned secret")
		}
		got, err := f.s.GetDeviceByKey(ctx, b.Key)
		if err != nil || got.ID != b.ID {
			t.Fatalf("by key: %+v %v", got, err)
		}
	})
}

// TestRotateSecret: a rotation stores the hash of a new secret, completes at once
// (rotation_state OK, attempt and completion stamped), and RotateSecretWith keeps the
// old secret when its use fails.
func TestRotateSecret(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", nil)
		dev, old := f.device(t, m.ID, `{}`)
		testenv.MustExec(t, d, `UPDATE devices SET rotation_state = 'PENDING' WHERE id = $1`, dev.ID)

		got, secret, err := f.s.RotateSecret(ctx, dev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if secret == old || secretHash(t, d, dev.ID) != hashOf(secret) {
			t.Fatal("rotation did not store the new secret's hash")
		}
		if got.RotationState != "OK" || got.LastRotationAttemptAt == nil || got.LastRotationCompletedAt == nil ||
			got.SecretCreatedAt == nil || !got.LastRotationCompletedAt.Equal(*got.SecretCreatedAt) {
			t.Fatalf("rotation bookkeeping %+v", got)
		}
		if _, _, err := f.s.RotateSecret(ctx, 9999); !isKind(err, apperr.NotFound) {
			t.Fatalf("rotate a missing device: %v", err)
		}

		boom := errors.New("use failed")
		var offered string
		err = f.s.RotateSecretWith(ctx, dev.ID, func(d *Device, s string) error { offered = s; return boom })
		if !errors.Is(err, boom) || offered == "" || offered == secret {
			t.Fatalf("failing use: %v (offered %q)", err, offered)
		}
		if secretHash(t, d, dev.ID) != hashOf(secret) {
			t.Fatal("a failed RotateSecretWith replaced the secret")
		}
		err = f.s.RotateSecretWith(ctx, dev.ID, func(d *Device, s string) error { offered = s; return nil })
		if err != nil || secretHash(t, d, dev.ID) != hashOf(offered) {
			t.Fatalf("RotateSecretWith: %v", err)
		}
	})
}

// TestCreateDevicesAllOrNothing: a batch inserts n devices with distinct keys and
// secrets, and when use (or anything) fails no device of it remains.
func TestCreateDevicesAllOrNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", ptr(nameSchema))
		if err := f.s.CreateDevices(ctx, m.ID, 3, `{}`, func([]NewDevice) error { t.Fatal("use called for a refused config"); return nil }); !isKind(err, apperr.Validation) {
			t.Fatalf("batch with a config the schema refuses: %v", err)
		}
		boom := errors.New("use failed")
		var seen int
		err := f.s.CreateDevices(ctx, m.ID, 5, `{"deviceName": "batch"}`, func(devs []NewDevice) error {
			seen = len(devs)
			return boom
		})
		if !errors.Is(err, boom) || seen != 5 {
			t.Fatalf("failing use: %v after %d devices", err, seen)
		}
		if n := testenv.Count(t, d, "devices"); n != 0 {
			t.Fatalf("%d devices remain of a failed batch", n)
		}

		var made []NewDevice
		if err := f.s.CreateDevices(ctx, m.ID, 4, `{"deviceName": "batch"}`, func(devs []NewDevice) error { made = devs; return nil }); err != nil {
			t.Fatal(err)
		}
		keys, secrets := map[string]bool{}, map[string]bool{}
		for _, nd := range made {
			keys[nd.Device.Key], secrets[nd.Secret] = true, true
			if !naming.ValidDeviceKey(nd.Device.Key) || *nd.Device.DeviceName != "batch" || secretHash(t, d, nd.Device.ID) != hashOf(nd.Secret) {
				t.Fatalf("batch device %+v", nd.Device)
			}
		}
		if len(made) != 4 || len(keys) != 4 || len(secrets) != 4 || testenv.Count(t, d, "devices") != 4 {
			t.Fatalf("batch made %d devices, %d keys, %d secrets", len(made), len(keys), len(secrets))
		}
	})
}

// TestCredentialsCacheClearedOnChange: with credentials cached, every change through the
// Service (rotation, update, deletion) is seen by the next Credentials at once.
func TestCredentialsCacheClearedOnChange(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		f.s.CacheCredentials(time.Hour)
		m := f.model(t, "lamp", nil)
		dev, secret := f.device(t, m.ID, `{}`)
		c, h, err := f.s.Credentials(ctx, dev.Key)
		if err != nil || h != hashOf(secret) || !c.Active || c.ID != dev.ID {
			t.Fatalf("credentials %+v %q %v", c, h, err)
		}
		// Proves the cache answers: a change behind the Service's back is not seen.
		testenv.MustExec(t, d, `UPDATE devices SET secret_hash = 'behind' WHERE id = $1`, dev.ID)
		if _, h, _ := f.s.Credentials(ctx, dev.Key); h != hashOf(secret) {
			t.Fatalf("cache not used: %q", h)
		}

		_, secret2, err := f.s.RotateSecret(ctx, dev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, h, _ := f.s.Credentials(ctx, dev.Key); h != hashOf(secret2) {
			t.Fatalf("after rotation: %q, want the new secret's hash", h)
		}
		if _, err := f.s.UpdateDevice(ctx, dev.ID, `{}`, false); err != nil {
			t.Fatal(err)
		}
		if c, _, _ := f.s.Credentials(ctx, dev.Key); c.Active {
			t.Fatal("after deactivation: still active")
		}
		if err := f.s.DeleteDevice(ctx, dev.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.s.Credentials(ctx, dev.Key); !isKind(err, apperr.NotFound) {
			t.Fatalf("after deletion: %v, want NotFound", err)
		}
	})
}

// TestConfigNotifiedOnlyWhenChangedAfterCommit: ConfigChanged is called once per update
// that changed the config, after it committed (an outside reader sees the new config);
// not for an update of the active flag alone nor for a refused one.
func TestConfigNotifiedOnlyWhenChangedAfterCommit(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", ptr(nameSchema))
		dev, _ := f.device(t, m.ID, `{"deviceName": "one"}`)
		if c, _ := f.notifier.calls(); len(c) != 0 {
			t.Fatalf("creation notified %v", c)
		}
		if _, err := f.s.UpdateDevice(ctx, dev.ID, `{"deviceName": "one"}`, false); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.UpdateDevice(ctx, dev.ID, `{"deviceName": "x"}`, true); !isKind(err, apperr.Validation) {
			t.Fatalf("refused config: %v", err)
		}
		if c, _ := f.notifier.calls(); len(c) != 0 {
			t.Fatalf("unchanged or refused config notified %v", c)
		}
		next := `{"deviceName": "two"}`
		if _, err := f.s.UpdateDevice(ctx, dev.ID, next, true); err != nil {
			t.Fatal(err)
		}
		clients, configs := f.notifier.calls()
		if len(clients) != 1 || clients[0] != "iotdevice-lamp-"+dev.Key {
			t.Fatalf("notified %v, want the device's client id once", clients)
		}
		if configs[0] != next {
			t.Fatalf("notified before commit: an outside reader saw config %q", configs[0])
		}
	})
}

// TestDeleteDeviceCleansUpInItsTransaction: DeviceDeleting runs in the deletion's
// transaction, and a failing cleanup keeps the device and rolls back the cleanup's writes.
func TestDeleteDeviceCleansUpInItsTransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", nil)
		dev, _ := f.device(t, m.ID, `{}`)
		boom := errors.New("cleanup failed")
		f.devices.fail = boom
		if err := f.s.DeleteDevice(ctx, dev.ID); !errors.Is(err, boom) {
			t.Fatalf("delete with failing cleanup: %v", err)
		}
		if _, err := f.s.GetDevice(ctx, dev.ID); err != nil {
			t.Fatalf("device deleted although its cleanup failed: %v", err)
		}
		if n := testenv.Count(t, d, "blob_deletions"); n != 0 {
			t.Fatalf("the failed cleanup's write survived: %d", n)
		}
		f.devices.fail = nil
		if err := f.s.DeleteDevice(ctx, dev.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.GetDevice(ctx, dev.ID); !isKind(err, apperr.NotFound) {
			t.Fatalf("device still there: %v", err)
		}
		if n := testenv.Count(t, d, "blob_deletions"); n != 1 {
			t.Fatalf("the cleanup's write did not commit with the deletion: %d", n)
		}
		if strings.Join(f.devices.devices, ",") != dev.Key+","+dev.Key || !f.devices.seen[1] {
			t.Fatalf("cleanup calls %v (device visible in tx: %v)", f.devices.devices, f.devices.seen)
		}
		if err := f.s.DeleteDevice(ctx, dev.ID); !isKind(err, apperr.NotFound) {
			t.Fatalf("delete a missing device: %v", err)
		}
		// The model is free to go now.
		if err := f.s.DeleteModel(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFindDevicesFilters: by model and by rotation state, which must be a known one.
func TestFindDevicesFilters(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		a, b := f.model(t, "a", nil), f.model(t, "b", nil)
		da, _ := f.device(t, a.ID, `{}`)
		f.device(t, b.ID, `{}`)
		f.device(t, b.ID, `{}`)
		testenv.MustExec(t, d, `UPDATE devices SET rotation_state = 'QUEUED' WHERE id = $1`, da.ID)
		got, err := f.s.ListDevices(ctx, &b.ID)
		if err != nil || len(got) != 2 || got[0].ModelCode != "b" || got[0].Key > got[1].Key {
			t.Fatalf("devices of b: %v %v", got, err)
		}
		got, err = f.s.FindDevices(ctx, DeviceFilter{RotationState: "QUEUED"})
		if err != nil || len(got) != 1 || got[0].ID != da.ID {
			t.Fatalf("QUEUED devices: %v %v", got, err)
		}
		if _, err := f.s.FindDevices(ctx, DeviceFilter{RotationState: "queued; DROP"}); !isKind(err, apperr.Validation) {
			t.Fatalf("unknown rotation state: %v", err)
		}
		ms, err := f.s.ListModels(ctx)
		if err != nil || len(ms) != 2 || ms[0].Code != "a" || ms[0].DeviceCount != 1 || ms[1].DeviceCount != 2 {
			t.Fatalf("models %v %v", ms, err)
		}
	})
}
