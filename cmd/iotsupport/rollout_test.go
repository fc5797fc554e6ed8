package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestRolloutCommands: start, status, advance and abort against a running server, with
// an editor token; a refused start exits non-zero with the server's message.
func TestRolloutCommands(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		var m struct{ ID int }
		s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "cli", "name": "cli"}).JSON(t, &m)
		for range 3 {
			s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m.ID, "config": "{}"})
		}
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", m.ID), bundletest.BuildCase(t, "cli", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware?make_current=false", m.ID), bundletest.BuildCase(t, "cli", "esp32c3", bundletest.Options{Version: "1.1.0"}))
		run := func(args ...string) (string, error) {
			root := rootCmd()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(append([]string{"rollout"}, append(args, "--url", s.URL, "--token", s.Tokens["editor"], "--model", fmt.Sprint(m.ID))...))
			err := root.Execute()
			return out.String(), err
		}
		out, err := run("start", "--version", "1.1.0", "--stages", "10:60,50:60,100", "--min-devices", "2")
		if err != nil || !regexp.MustCompile(`^rollout (\d+) of 1\.1\.0: active, stage 1 of 3 \(10 %\)\n$`).MatchString(out) {
			t.Fatalf("start: %v %q", err, out)
		}
		id := regexp.MustCompile(`\d+`).FindString(out)
		if out, err := run("start", "--version", "9.9.9", "--stages", "100"); err == nil || !strings.Contains(err.Error(), "404 RECORD_NOT_FOUND: FirmwareVersion cli 9.9.9 was not found") {
			t.Fatalf("start of an unknown version: %v %q", err, out)
		}
		out, err = run("status")
		if err != nil || !strings.Contains(out, "rollout "+id+" of 1.1.0: active") || !regexp.MustCompile(`(?m)^3 +100 +0 +pending +3 +0$`).MatchString(out) {
			t.Fatalf("status: %v\n%s", err, out)
		}
		if out, err = run("advance", "--id", id); err != nil || !strings.Contains(out, "stage 2 of 3 (50 %)") {
			t.Fatalf("advance: %v %q", err, out)
		}
		if out, err = run("abort", "--id", id); err != nil || !strings.Contains(out, ": aborted,") {
			t.Fatalf("abort: %v %q", err, out)
		}
		if out, err = run("status", "--id", id, "--json"); err != nil || !strings.Contains(out, `"state": "aborted"`) {
			t.Fatalf("status --json: %v %q", err, out)
		}
	})
}
