package devices

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestModelCodeAndNameRules: codes follow naming.ValidModelCode (they become object-key
// segments), names are 1-255 non-blank characters, and a code is unique.
func TestModelCodeAndNameRules(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		for _, code := range []string{"", "Lamp", "a-b", "a/b", "..", "a b", strings.Repeat("a", 51)} {
			if _, err := f.s.CreateModel(ctx, ModelInput{Code: code, Name: ptr("x")}); !isKind(err, apperr.Validation) {
				t.Errorf("code %q: %v, want a validation error", code, err)
			}
		}
		for _, name := range []*string{nil, ptr(""), ptr("   "), ptr(strings.Repeat("n", 256))} {
			if _, err := f.s.CreateModel(ctx, ModelInput{Code: "lamp", Name: name}); !isKind(err, apperr.Validation) {
				t.Errorf("name %v: %v, want a validation error", name, err)
			}
		}
		if n := testenv.Count(t, d, "device_models"); n != 0 {
			t.Fatalf("%d models stored from refused input", n)
		}
		m, err := f.s.CreateModel(ctx, ModelInput{Code: "lamp_2", Name: ptr("  Lamp  ")})
		if err != nil {
			t.Fatal(err)
		}
		if m.Code != "lamp_2" || m.Name != "Lamp" || m.ConfigSchema != nil || m.DeviceCount != 0 {
			t.Fatalf("created %+v", m)
		}
		if _, err := f.s.CreateModel(ctx, ModelInput{Code: strings.Repeat("a", 50), Name: ptr("long")}); err != nil {
			t.Fatalf("50-character code: %v", err)
		}
		if _, err := f.s.CreateModel(ctx, ModelInput{Code: "lamp_2", Name: ptr("again")}); !isKind(err, apperr.Exists) {
			t.Fatalf("duplicate code: %v, want RECORD_EXISTS", err)
		}
		if _, err := f.s.UpdateModel(ctx, m.ID, ModelInput{Name: ptr(" ")}); !isKind(err, apperr.Validation) {
			t.Fatalf("blank name on update: %v", err)
		}
		got, err := f.s.GetModelByCode(ctx, "lamp_2")
		if err != nil || got.ID != m.ID || got.Name != "Lamp" {
			t.Fatalf("by code: %+v %v", got, err)
		}
		if _, err := f.s.GetModelByCode(ctx, "nope"); !isKind(err, apperr.NotFound) {
			t.Fatalf("unknown code: %v", err)
		}
	})
}

// TestConfigSchemaRules: a config schema must be JSON and a compilable JSON Schema that
// pulls in nothing external; blank means no schema; update checks it the same way.
func TestConfigSchemaRules(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		for _, schema := range []string{
			`{"type":`,                                // not JSON
			`{"type": 5}`,                             // not a valid schema
			`{"$ref": "https://example.com/s.json"}`,  // remote $ref
			`{"$ref": "file:///etc/passwd"}`,          // local file $ref
			`{"properties": {"a": {"minimum": "x"}}}`, // bad keyword value
		} {
			if _, err := f.s.CreateModel(ctx, ModelInput{Code: "m", Name: ptr("m"), ConfigSchema: ptr(schema)}); !isKind(err, apperr.Validation) {
				t.Errorf("schema %s: %v, want a validation error", schema, err)
			}
		}
		if n := testenv.Count(t, d, "device_models"); n != 0 {
			t.Fatalf("%d models stored with refused schemas", n)
		}
		blank := f.model(t, "blank", ptr("  "))
		if blank.ConfigSchema != nil {
			t.Fatalf("blank schema stored as %q", *blank.ConfigSchema)
		}
		schema := `{"type": "object", "required": ["deviceName"]}`
		m := f.model(t, "withschema", ptr(schema))
		if m.ConfigSchema == nil || *m.ConfigSchema != schema {
			t.Fatalf("schema stored as %v", m.ConfigSchema)
		}
		if _, err := f.s.UpdateModel(ctx, m.ID, ModelInput{ConfigSchema: ptr(`{"type": 5}`)}); !isKind(err, apperr.Validation) {
			t.Fatalf("invalid schema on update: %v", err)
		}
		got, err := f.s.GetModel(ctx, m.ID)
		if err != nil || got.ConfigSchema == nil || *got.ConfigSchema != schema {
			t.Fatalf("refused update changed the schema to %v", got.ConfigSchema)
		}
		newSchema := `{"type": "object"}`
		if got, err = f.s.UpdateModel(ctx, m.ID, ModelInput{ConfigSchema: ptr(newSchema)}); err != nil || *got.ConfigSchema != newSchema || got.Name != m.Name {
			t.Fatalf("update schema: %+v %v", got, err)
		}
		if _, err := f.s.UpdateModel(ctx, 9999, ModelInput{Name: ptr("x")}); !isKind(err, apperr.NotFound) {
			t.Fatalf("update of a missing model: %v", err)
		}
	})
}

// TestDeleteModelRefusedWithDevices: a model with devices is not deleted, and its
// cleanup is never asked to remove what other owners keep of it.
func TestDeleteModelRefusedWithDevices(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", nil)
		f.device(t, m.ID, `{}`)
		err := f.s.DeleteModel(ctx, m.ID)
		if !isKind(err, apperr.InvalidOperation) || !strings.Contains(err.Error(), "1 associated device") {
			t.Fatalf("delete a model with a device: %v, want INVALID_OPERATION", err)
		}
		if len(f.models.models) != 0 {
			t.Fatalf("cleanup called for a refused deletion: %v", f.models.models)
		}
		if _, err := f.s.GetModel(ctx, m.ID); err != nil {
			t.Fatalf("model gone after a refused deletion: %v", err)
		}
		if n := testenv.Count(t, d, "devices"); n != 1 {
			t.Fatalf("%d devices after a refused deletion", n)
		}
		if err := f.s.DeleteModel(ctx, 9999); !isKind(err, apperr.NotFound) {
			t.Fatalf("delete a missing model: %v", err)
		}
	})
}

// TestDeleteModelCleansUpInItsTransaction: ModelDeleting runs inside the deletion's
// transaction (its writes commit with the deletion), and a failing cleanup rolls the
// deletion back with everything the cleanup wrote.
func TestDeleteModelCleansUpInItsTransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		f := newFixture(d)
		m := f.model(t, "lamp", nil)

		boom := errors.New("cleanup failed")
		f.models.fail = boom
		if err := f.s.DeleteModel(ctx, m.ID); !errors.Is(err, boom) {
			t.Fatalf("delete with failing cleanup: %v, want the cleanup's error", err)
		}
		if _, err := f.s.GetModel(ctx, m.ID); err != nil {
			t.Fatalf("model deleted although its cleanup failed: %v", err)
		}
		if n := testenv.Count(t, d, "blob_deletions"); n != 0 {
			t.Fatalf("the failed cleanup's write survived: %d outbox rows", n)
		}

		f.models.fail = nil
		if err := f.s.DeleteModel(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.GetModel(ctx, m.ID); !isKind(err, apperr.NotFound) {
			t.Fatalf("model still there: %v", err)
		}
		if n := testenv.Count(t, d, "blob_deletions"); n != 1 {
			t.Fatalf("the cleanup's write did not commit with the deletion: %d outbox rows", n)
		}
		if len(f.models.models) != 2 || f.models.models[1] != "lamp" || !f.models.seen[0] || !f.models.seen[1] {
			t.Fatalf("cleanup calls %v, model visible in tx %v", f.models.models, f.models.seen)
		}
	})
}
