package fleet

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/naming"
)

func TestReadHeaders(t *testing.T) {
	for _, c := range []struct {
		version, boot, reason string
		want                  Report
		invalid               []string
	}{
		{"1.2.3", "abc", "PANIC", Report{"1.2.3", "abc", "PANIC"}, nil},
		{"", "", "", Report{}, nil},
		{"v1.0-56-g30082bf", strings.Repeat("b", 64), "PWR_GLITCH", Report{"v1.0-56-g30082bf", strings.Repeat("b", 64), "PWR_GLITCH"}, nil},
		{"..", "a b", "panic", Report{}, []string{HeaderVersion, HeaderBootID, HeaderReason}},
		{strings.Repeat("1", 33), strings.Repeat("b", 65), "ESP_RST_PANIC", Report{}, []string{HeaderVersion, HeaderBootID, HeaderReason}},
		{"1.0", "ok\x00", "SW", Report{Version: "1.0", Reason: "SW"}, []string{HeaderBootID}},
	} {
		h := http.Header{}
		for k, v := range map[string]string{HeaderVersion: c.version, HeaderBootID: c.boot, HeaderReason: c.reason} {
			if v != "" {
				h.Set(k, v)
			}
		}
		got, invalid := ReadHeaders(h)
		if got != c.want || !slices.Equal(invalid, c.invalid) {
			t.Errorf("%q %q %q: got %+v %v, want %+v %v", c.version, c.boot, c.reason, got, invalid, c.want, c.invalid)
		}
	}
}

func TestParseWindow(t *testing.T) {
	for s, want := range map[string]time.Duration{"1h": time.Hour, "60m": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "90d": 90 * 24 * time.Hour, "2160h": 90 * 24 * time.Hour} {
		if got, err := ParseWindow(s); err != nil || got != want {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	for _, s := range []string{"", "0h", "59m", "91d", "2161h", "24", "1w", "-1h", "1.5h", "01h", "1h30m", " 1h"} {
		if _, err := ParseWindow(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzTelemetryInput: whatever a device sends in its headers, and whatever window a
// caller asks for, nothing panics, accepted values obey their rules and refused ones are
// named.
func FuzzTelemetryInput(f *testing.F) {
	f.Add("1.0.0", "boot-1", "PANIC", "24h")
	f.Add("..", strings.Repeat("x", 70), "ESP_RST_SW", "91d")
	f.Add("v1.0-56-g30082bf", "\x7f", "", "90d")
	f.Fuzz(func(t *testing.T, version, boot, reason, window string) {
		h := http.Header{}
		h[HeaderVersion] = []string{version}
		h[HeaderBootID] = []string{boot}
		h[HeaderReason] = []string{reason}
		rep, invalid := ReadHeaders(h)
		if rep.Version != "" && (!naming.ValidVersion(rep.Version) || rep.Version != version) {
			t.Fatalf("accepted version %q", rep.Version)
		}
		if rep.BootID != "" && (len(rep.BootID) > MaxBootIDLen || rep.BootID != boot) {
			t.Fatalf("accepted boot id %q", rep.BootID)
		}
		if rep.Reason != "" && !slices.Contains(ResetReasons, rep.Reason) {
			t.Fatalf("accepted reason %q", rep.Reason)
		}
		if version != "" && rep.Version == "" && !slices.Contains(invalid, HeaderVersion) ||
			boot != "" && rep.BootID == "" && !slices.Contains(invalid, HeaderBootID) ||
			reason != "" && rep.Reason == "" && !slices.Contains(invalid, HeaderReason) {
			t.Fatalf("a dropped header was not named: %+v %v", rep, invalid)
		}
		if w, err := ParseWindow(window); err == nil && (w < MinWindow || w > MaxWindow) {
			t.Fatalf("window %q accepted as %s", window, w)
		}
	})
}
