// Package fleet keeps what devices report about themselves — the version they run, when
// they were last seen, why and when they last booted — and turns it into the fleet view:
// per model and version, devices seen, crashed and crash-free over a window.
//
// Check-ins are the hottest path of the service, so they never write to the database:
// each replica coalesces what it saw in memory and writes it every flush interval, one
// statement per table. Boots and core dumps are rare and must not be lost, so they are
// written at once.
package fleet

import (
	"net/http"
	"slices"
	"strings"

	"github.com/iotsupport/iotsupport/internal/naming"
)

// The headers devices send on any authenticated /api/iot request.
const (
	HeaderVersion = "X-Firmware-Version"
	HeaderBootID  = "X-Boot-Id"
	HeaderReason  = "X-Reset-Reason"
)

// ResetReasons are ESP-IDF's esp_reset_reason_t names without their ESP_RST_ prefix.
var ResetReasons = []string{"POWERON", "EXT", "SW", "PANIC", "INT_WDT", "TASK_WDT", "WDT", "DEEPSLEEP",
	"BROWNOUT", "SDIO", "USB", "JTAG", "EFUSE", "PWR_GLITCH", "CPU_LOCKUP", "UNKNOWN"}

// CrashReasons are the reset reasons that mean the previous boot crashed.
var CrashReasons = []string{"PANIC", "INT_WDT", "TASK_WDT", "WDT"}

// MaxBootIDLen bounds X-Boot-Id.
const MaxBootIDLen = 64

// Report is what one request told about its device; empty fields were absent or invalid.
type Report struct {
	Version string
	BootID  string
	Reason  string
}

// ReadHeaders reads the telemetry headers of a device's request. Invalid values are
// dropped and named in invalid (by header), never an error: a device with a bad header
// still gets its answer.
func ReadHeaders(h http.Header) (rep Report, invalid []string) {
	if v := h.Get(HeaderVersion); v != "" {
		if naming.ValidVersion(v) {
			rep.Version = v
		} else {
			invalid = append(invalid, HeaderVersion)
		}
	}
	if v := h.Get(HeaderBootID); v != "" {
		if validBootID(v) {
			rep.BootID = v
		} else {
			invalid = append(invalid, HeaderBootID)
		}
	}
	if v := h.Get(HeaderReason); v != "" {
		if slices.Contains(ResetReasons, v) {
			rep.Reason = v
		} else {
			invalid = append(invalid, HeaderReason)
		}
	}
	return rep, invalid
}

// validBootID accepts 1–64 printable ASCII characters: the id is opaque, but it is stored
// and shown, so no control bytes.
func validBootID(s string) bool {
	if len(s) == 0 || len(s) > MaxBootIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// crashReasonsSQL is CrashReasons as an SQL list ('PANIC', …): fixed names, no quoting needed.
var crashReasonsSQL = "'" + strings.Join(CrashReasons, "', '") + "'"
