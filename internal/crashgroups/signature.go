package crashgroups

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// GroupingVersion names the signature algorithm below. Changing what goes into a
// fingerprint must raise it: stored groups keep the version that made them, and the
// backfill re-groups every decoded dump under the new one, never silently.
const GroupingVersion = 1

// MaxFrames is how many app frames a signature holds.
const MaxFrames = 5

// Bounds of what a signature takes from a report (reports come from devices); the title
// and culprit fit their columns.
const (
	maxName    = 200
	maxTitle   = 500
	maxCulprit = 300
)

// Signature is what identifies one crash: the fault and the top app frames' names.
type Signature struct {
	Fingerprint string   // hex SHA-256 of the version, fault and frames
	Fault       string   // "abort()", "LoadProhibited", "assert failed: x == 1 (main.c)", …
	Frames      []string // up to MaxFrames app function names, innermost first
	Title       string   // "LoadProhibited in recur_func ← app_main"
	Culprit     string   // the top app frame with its file and line: "fail_once (main.c:14)"
}

// machinery are the functions of ESP-IDF's panic, abort, assert and watchdog paths and
// FreeRTOS's task entry: present in every crash of their kind, so they say nothing about
// which crash it is.
var machinery = map[string]bool{
	"panic_abort": true, "esp_system_abort": true, "abort": true, "__assert_func": true, "__assert": true,
	"esp_panic_handler": true, "panic_handler": true, "panicHandler": true, "xt_unhandled_exception": true,
	"esp_panic_handler_reconfigure_wdts": true, "panic_print_backtrace": true, "print_abort_details": true,
	"vApplicationStackOverflowHook": true, "esp_vApplicationStackOverflowHook": true,
	"task_wdt_isr": true, "esp_task_wdt_isr": true, "task_wdt_timeout_handling": true, "task_wdt_timeout_abort": true,
	"esp_int_wdt_isr": true, "_esp_error_check_failed": true, "_esp_error_check_failed_without_abort": true,
	"vPortTaskWrapper": true, "main_task": true, "prvTaskExitError": true,
}

// faultByFrame names the fault from the machinery a dump without a panic reason (binary
// formats) passed through, innermost first.
var faultByFrame = []struct{ fn, fault string }{
	{"__assert_func", "assert failed"}, {"__assert", "assert failed"},
	{"vApplicationStackOverflowHook", "stack overflow"}, {"esp_vApplicationStackOverflowHook", "stack overflow"},
	{"task_wdt_isr", "Task watchdog"}, {"esp_task_wdt_isr", "Task watchdog"},
	{"esp_int_wdt_isr", "Interrupt wdt timeout"},
	{"abort", "abort()"},
}

var (
	assertReason = regexp.MustCompile(`^assert failed: (\S+) (\S+?):\d+ \((.*)\)$`)
	hexNumber    = regexp.MustCompile(`0x[0-9a-fA-F]+`)
	onCore       = regexp.MustCompile(`\s+on (core|CPU) ?\d+\.?$`)
	spaces       = regexp.MustCompile(`\s+`)
)

// Compute derives the signature of a decoded report as JSON (what coredumps stores). ok
// is false when the report says nothing to group by: unparsable, or neither a fault nor a
// named app frame.
func Compute(reportJSON []byte) (sig Signature, ok bool) {
	var r espcore.Report
	if err := json.Unmarshal(reportJSON, &r); err != nil {
		return Signature{}, false
	}
	return ComputeReport(&r)
}

// ComputeReport is Compute over the decoder's report itself (the decode job has it at hand).
func ComputeReport(r *espcore.Report) (sig Signature, ok bool) {
	if r == nil {
		return Signature{}, false
	}
	chip, _ := chips.ByName(r.Chip)
	var frames []string
	var seen []string // machinery met before the first app frame
	culprit := ""
	if t := crashed(r); t >= 0 {
		for _, f := range r.Threads[t].Frames {
			name := clip(f.Function)
			switch {
			case name == "" || name == "??" || f.Inlined || (chip.ROMHi > 0 && chip.InROM(f.PC)):
				continue
			case machinery[name]:
				if len(frames) == 0 {
					seen = append(seen, name)
				}
				continue
			}
			if len(frames) == 0 {
				culprit = name
				if f.File != "" {
					culprit += " (" + path.Base(f.File) + ":" + strconv.Itoa(f.Line) + ")"
				}
			}
			if len(frames) > 0 && frames[len(frames)-1] == name {
				continue // recursion depth varies from crash to crash
			}
			if len(frames) == MaxFrames {
				break
			}
			frames = append(frames, name)
		}
	}
	sig.Fault = fault(r, seen)
	if sig.Fault == "" && len(frames) == 0 {
		return Signature{}, false
	}
	if sig.Fault == "" {
		sig.Fault = "unknown fault"
	}
	sig.Frames = frames
	sig.Culprit = clipTo(culprit, maxCulprit)
	sig.Title = sig.Fault
	if len(frames) > 0 {
		sig.Title += " in " + strings.Join(frames[:min(2, len(frames))], " ← ")
	}
	sig.Title = clipTo(sig.Title, maxTitle)
	h := sha256.New()
	h.Write([]byte("crashgroups/v" + strconv.Itoa(GroupingVersion) + "\x00" + sig.Fault))
	for _, f := range frames {
		h.Write([]byte("\x00" + f))
	}
	sig.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return sig, true
}

// crashed is the index of the crashed task's thread, -1 when there is none.
func crashed(r *espcore.Report) int {
	for i, t := range r.Threads {
		if t.Crashed {
			return i
		}
	}
	if r.CrashedTask != nil {
		for i, t := range r.Threads {
			if t.TCB == r.CrashedTask.TCB {
				return i
			}
		}
	}
	return -1
}

// fault names the crash's kind: from the panic reason when the dump has one (the
// exception registers of an abort or assert are stale), else from the machinery frames,
// else the exception cause.
func fault(r *espcore.Report, machineryFrames []string) string {
	if reason := strings.TrimSpace(r.PanicReason); reason != "" {
		return faultOfReason(reason)
	}
	for _, m := range faultByFrame {
		for _, f := range machineryFrames {
			if f == m.fn {
				return m.fault
			}
		}
	}
	if r.Exception != nil {
		return causeName(r.Exception.CauseName)
	}
	return ""
}

// faultOfReason reduces ESP-IDF's panic reason to what stays the same from crash to
// crash: no addresses, lines or core numbers.
func faultOfReason(reason string) string {
	lower := strings.ToLower(reason)
	switch {
	case strings.HasPrefix(lower, "abort() was called"):
		return "abort()"
	case strings.HasPrefix(lower, "assert failed"):
		if m := assertReason.FindStringSubmatch(reason); m != nil {
			return clip("assert failed: " + m[3] + " (" + path.Base(m[2]) + ")")
		}
		return "assert failed"
	case strings.Contains(lower, "interrupt wdt timeout"):
		return "Interrupt wdt timeout"
	case strings.Contains(lower, "task watchdog"):
		return "Task watchdog"
	case strings.Contains(lower, "stack overflow") || strings.Contains(lower, "stack protection fault"):
		return "stack overflow"
	case strings.Contains(lower, "double exception"):
		return "double exception"
	}
	s := hexNumber.ReplaceAllString(reason, "")
	s = onCore.ReplaceAllString(s, "")
	s = strings.TrimSpace(spaces.ReplaceAllString(s, " "))
	return causeName(s)
}

// causeName drops the "Cause" suffix of Xtensa's exception names: LoadProhibitedCause
// and the panic reason's LoadProhibited are one fault.
func causeName(s string) string {
	if n, ok := strings.CutSuffix(s, "Cause"); ok && n != "" {
		s = n
	}
	return clip(s)
}

func clip(s string) string { return clipTo(strings.ToValidUTF8(strings.TrimSpace(s), ""), maxName) }

// clipTo cuts valid UTF-8 to at most n bytes (so at most n characters), on a character boundary.
func clipTo(s string, n int) string {
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}
