package httpapi_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// olderUARTText prints raw as ESP-IDF 3.x–4.x's esp_core_dump_uart does (each write
// base64-encoded by itself in lines of at most 48 bytes, so '=' padding ends lines all
// through the dump), with the line ends a terminal capture kept: CR only.
func olderUARTText(raw []byte, writes []int) []byte {
	var b bytes.Buffer
	b.WriteString("I (3021) esp_core_dump_uart: Press Enter to print core dump to UART...\r")
	b.WriteString("================= CORE DUMP START =================\r")
	for i := 0; len(raw) > 0; i++ {
		w := raw[:min(writes[i%len(writes)], len(raw))]
		raw = raw[len(w):]
		for len(w) > 0 {
			n := min(48, len(w))
			b.WriteString(base64.StdEncoding.EncodeToString(w[:n]) + "\r")
			w = w[n:]
		}
	}
	b.WriteString("================= CORE DUMP END =================\rRebooting...\r")
	return b.Bytes()
}

func coredumpDetailOf(t *testing.T, s *apitest.Server, deviceID, id int) map[string]any {
	t.Helper()
	return s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", deviceID, id), nil).Map(t)
}

func reportOf(t *testing.T, d map[string]any) espcore.Report {
	t.Helper()
	var rep espcore.Report
	b, _ := json.Marshal(d["report"])
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s: %v", b, err)
	}
	return rep
}

func TestCoredumpOlderUARTLines(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		mid := newModel(t, s, "uart")
		key, secret := newDevice(t, s, mid)
		did := deviceIDByKey(t, s, key)
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "uart", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		dump, tcb, task := caseDump(t, "esp32c3")
		text := olderUARTText(decodeCoredumpLines(t, dump), []int{24, 52, 31, 176, 7})
		id := uploadDump(t, s, key, secret, text, "esp32c3", "1.0.0")
		d := coredumpDetailOf(t, s, did, id)
		if d["container"] != "base64" || d["checksum_ok"] != true || d["recognized"] != true || d["app_elf_sha_prefix"] == nil {
			t.Fatalf("ingest findings: %v", d)
		}
		d = waitStatus(t, s, did, id, "PARSED")
		rep := reportOf(t, d)
		if rep.CrashedTask == nil || uint64(rep.CrashedTask.TCB) != tcb || rep.CrashedTask.Name != task || len(rep.Threads) != 3 || !rep.Checksum.OK {
			t.Fatalf("report: crashed %+v, %d threads, checksum %+v", rep.CrashedTask, len(rep.Threads), rep.Checksum)
		}
	})
}

func TestCoredumpNotADumpAndChipMismatch(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		mid := newModel(t, s, "odd")
		key, secret := newDevice(t, s, mid)
		did := deviceIDByKey(t, s, key)

		// No firmware is stored: a body that is no core dump must still say what it is.
		garbage := uploadDump(t, s, key, secret, []byte("hello, this is a log line and not a core dump\n"), "esp32c3", "1.0.0")
		d := waitStatus(t, s, did, garbage, "ERROR")
		if d["parse_error"] != "corrupt" || !strings.Contains(fmt.Sprint(d["parsed_output"]), "not an ESP-IDF core dump") || d["report"] != nil {
			t.Fatalf("garbage: %v / %v", d["parse_error"], d["parsed_output"])
		}
		// Base64 text of a header with an unknown version word (format 0x0205 of an ESP32-C3).
		unknown := base64.StdEncoding.EncodeToString([]byte{0x40, 0, 0, 0, 0x05, 0x02, 0x05, 0x00, 0, 0, 0, 0}) + "\n"
		uid := uploadDump(t, s, key, secret, []byte(unknown), "esp32c3", "1.0.0")
		d = waitStatus(t, s, did, uid, "ERROR")
		if d["parse_error"] != "unsupported" || !strings.Contains(fmt.Sprint(d["parsed_output"]), "unknown core dump version word 0x00050205") {
			t.Fatalf("unknown version: %v / %v", d["parse_error"], d["parsed_output"])
		}

		// The device names esp32s3, the dump's header says ESP32-C3: the dump wins, the
		// disagreement stays visible.
		dump, _, _ := caseDump(t, "esp32c3")
		mis := uploadDump(t, s, key, secret, dump, "ESP32S3", "1.0.0")
		d = coredumpDetailOf(t, s, did, mis)
		if d["chip"] != "esp32c3" || d["reported_chip"] != "esp32s3" {
			t.Fatalf("chip %v, reported_chip %v", d["chip"], d["reported_chip"])
		}
		agree := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
		if d := coredumpDetailOf(t, s, did, agree); d["chip"] != "esp32c3" || d["reported_chip"] != nil {
			t.Fatalf("agreeing chip: %v, reported_chip %v", d["chip"], d["reported_chip"])
		}
		for _, c := range s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", did), nil).Map(t)["coredumps"].([]any) {
			if m := c.(map[string]any); int(m["id"].(float64)) == mis && m["chip"] != "esp32c3" {
				t.Fatalf("list: chip %v", m["chip"])
			}
		}
	})
}

// A dump whose firmware is not stored keeps its documented status (ERROR, no_firmware,
// re-queued when the firmware arrives), but the report holds what the dump itself does.
func TestCoredumpReportWithoutFirmware(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		mid := newModel(t, s, "nofw")
		key, secret := newDevice(t, s, mid)
		did := deviceIDByKey(t, s, key)
		dump, tcb, task := caseDump(t, "esp32c3")
		id := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
		d := waitStatus(t, s, did, id, "ERROR")
		if d["parse_error"] != "no_firmware" {
			t.Fatalf("parse_error %v", d["parse_error"])
		}
		rep := reportOf(t, d)
		if rep.Chip != "ESP32-C3" || rep.CrashedTask == nil || uint64(rep.CrashedTask.TCB) != tcb || rep.CrashedTask.Name != task ||
			rep.PanicReason == "" || rep.Exception == nil || len(rep.Registers) != 32 || rep.ELFSHA256 != "" {
			t.Fatalf("report: chip %q crashed %+v panic %q exception %+v, %d registers", rep.Chip, rep.CrashedTask, rep.PanicReason, rep.Exception, len(rep.Registers))
		}
		// esp32c3/expected_output: IDLE, and esp_timer in vPortClearInterruptMaskFromISR
		// called from vPortExitCritical.
		if len(rep.Threads) != 3 || rep.Threads[1].Name != "IDLE" || rep.Threads[2].Name != "esp_timer" {
			t.Fatalf("threads: %+v", rep.Threads)
		}
		if fr := rep.Threads[2].Frames; len(fr) < 2 || fr[0].PC != 0x4038424e || fr[1].PC != 0x403842b4 {
			t.Fatalf("esp_timer frames: %+v", fr)
		}
		out := fmt.Sprint(d["parsed_output"])
		if !strings.Contains(out, "no firmware") || !strings.Contains(out, "Crashed task handle: 0x3fc8ec30, name: 'main'") || !strings.Contains(out, "esp_timer") {
			t.Fatalf("parsed_output: %.600s", out)
		}
		// The firmware arrives: decoded with names.
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "nofw", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		d = waitStatus(t, s, did, id, "PARSED")
		if rep := reportOf(t, d); rep.ELFSHA256 == "" || rep.Threads[2].Frames[1].Function != "vPortExitCritical" {
			t.Fatalf("after firmware: %+v", rep.Threads[2].Frames)
		}
	})
}
