package crashgroups

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/iotsupport/iotsupport/internal/elfsym"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// decodedReport decodes a shared test case with its ELF, as the decode job does, and
// returns the report JSON coredumps stores.
func decodedReport(t testing.TB, name string) []byte {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "esp-coredump", name)
	elfBytes, err := os.ReadFile(filepath.Join(dir, "app.elf"))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := os.ReadFile(filepath.Join(dir, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := elfsym.New(bytes.NewReader(elfBytes))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := espcore.Decode(dump, ix, espcore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignatureOfRealDumps(t *testing.T) {
	for _, name := range []string{"esp32", "esp32_bin", "esp32c3", "esp32c3_bin", "esp32c6"} {
		t.Run(name, func(t *testing.T) {
			sig, ok := Compute(decodedReport(t, name))
			if !ok {
				t.Fatal("no signature")
			}
			// Every case is the test app's abort() in fail_once called from app_main: the
			// panic/abort machinery, ROM frames and FreeRTOS's task entry are skipped; the
			// binary formats carry no panic reason, so abort() is read from the frames.
			if sig.Fault != "abort()" || strings.Join(sig.Frames, ",") != "fail_once,app_main" {
				t.Fatalf("fault %q frames %v", sig.Fault, sig.Frames)
			}
			if sig.Title != "abort() in fail_once ← app_main" || sig.Culprit != "fail_once (test_core_dump.c:14)" || len(sig.Fingerprint) != 64 {
				t.Fatalf("title %q culprit %q fingerprint %q", sig.Title, sig.Culprit, sig.Fingerprint)
			}
		})
	}
}

// Two builds of one source (the esp32c3 and esp32c3_bin cases were built by different
// people: every address differs, and the stale exception cause too) have one signature.
func TestSignatureStableAcrossBuilds(t *testing.T) {
	a, _ := Compute(decodedReport(t, "esp32c3"))
	b, _ := Compute(decodedReport(t, "esp32c3_bin"))
	if a.Fingerprint != b.Fingerprint {
		t.Fatalf("%+v\n%+v", a, b)
	}
	x, _ := Compute(decodedReport(t, "esp32"))
	y, _ := Compute(decodedReport(t, "esp32_bin"))
	if x.Fingerprint != y.Fingerprint || x.Fingerprint != a.Fingerprint {
		t.Fatalf("xtensa builds: %s %s (riscv %s)", x.Fingerprint, y.Fingerprint, a.Fingerprint)
	}
}

// shifted moves every address of a report and every line, as a rebuild does.
func shifted(t *testing.T, rep []byte, by uint32) []byte {
	t.Helper()
	var r espcore.Report
	if err := json.Unmarshal(rep, &r); err != nil {
		t.Fatal(err)
	}
	for i := range r.Threads {
		for j := range r.Threads[i].Frames {
			f := &r.Threads[i].Frames[j]
			if f.Function != "??" && f.Line > 0 { // app code moves; ROM stays
				f.PC += by
				f.Line += 7
			}
		}
	}
	r.PanicReason = strings.Replace(r.PanicReason, "0x42009351", "0x4200a351", 1)
	b, _ := json.Marshal(r)
	return b
}

func TestSignatureIgnoresAddressesAndLines(t *testing.T) {
	rep := decodedReport(t, "esp32c3")
	a, _ := Compute(rep)
	b, _ := Compute(shifted(t, rep, 0x1000))
	if a.Fingerprint != b.Fingerprint {
		t.Fatalf("moved build regrouped: %+v vs %+v", a, b)
	}
	if b.Culprit != "fail_once (test_core_dump.c:21)" {
		t.Fatalf("culprit keeps the line of its own dump: %q", b.Culprit)
	}
}

// edit changes the crashed thread's frames of a real report.
func edit(t *testing.T, rep []byte, fn func(r *espcore.Report, frames []espcore.Frame) []espcore.Frame) []byte {
	t.Helper()
	var r espcore.Report
	if err := json.Unmarshal(rep, &r); err != nil {
		t.Fatal(err)
	}
	for i := range r.Threads {
		if r.Threads[i].Crashed {
			r.Threads[i].Frames = fn(&r, r.Threads[i].Frames)
		}
	}
	b, _ := json.Marshal(r)
	return b
}

func TestSignatureRules(t *testing.T) {
	rep := decodedReport(t, "esp32c3")
	base, _ := Compute(rep)
	frame := func(fn string, inlined bool) espcore.Frame {
		return espcore.Frame{PC: 0x42001000, Function: fn, File: "/p/main/x.c", Line: 3, Inlined: inlined}
	}
	cases := []struct {
		name      string
		edit      func(r *espcore.Report, f []espcore.Frame) []espcore.Frame
		same      bool
		wantFault string
		wantTitle string
	}{
		{"another caller is another crash", func(_ *espcore.Report, f []espcore.Frame) []espcore.Frame {
			f[6].Function = "other_main"
			return f
		}, false, "abort()", "abort() in fail_once ← other_main"},
		{"an inlined wrapper is skipped", func(_ *espcore.Report, f []espcore.Frame) []espcore.Frame {
			return append(f[:3:3], append([]espcore.Frame{frame("inline_helper", true)}, f[3:]...)...)
		}, true, "abort()", ""},
		{"recursion depth does not matter", func(_ *espcore.Report, f []espcore.Frame) []espcore.Frame {
			return append(f[:4:4], append([]espcore.Frame{f[3], f[3], f[3]}, f[4:]...)...)
		}, true, "abort()", ""},
		{"only five app frames count", func(_ *espcore.Report, f []espcore.Frame) []espcore.Frame {
			extra := []espcore.Frame{frame("a1", false), frame("a2", false), frame("a3", false), frame("a4", false), frame("a5", false)}
			return append(f[:3:3], extra...)
		}, false, "abort()", "abort() in a1 ← a2"},
		{"assert: expression and file, not line", func(r *espcore.Report, f []espcore.Frame) []espcore.Frame {
			r.PanicReason = "assert failed: fail_once /p/main/test_core_dump.c:14 (x == 1)"
			return f
		}, false, "assert failed: x == 1 (test_core_dump.c)", "assert failed: x == 1 (test_core_dump.c) in fail_once ← app_main"},
		{"exception cause without panic reason", func(r *espcore.Report, f []espcore.Frame) []espcore.Frame {
			r.PanicReason = ""
			r.Exception.CauseName = "LoadProhibitedCause"
			return []espcore.Frame{frame("recur_func", false), frame("recur_func", false), frame("app_main", false)}
		}, false, "LoadProhibited", "LoadProhibited in recur_func ← app_main"},
		{"watchdog reason", func(r *espcore.Report, f []espcore.Frame) []espcore.Frame {
			r.PanicReason = "Interrupt wdt timeout on CPU1"
			return f
		}, false, "Interrupt wdt timeout", ""},
		{"stack overflow reason", func(r *espcore.Report, f []espcore.Frame) []espcore.Frame {
			r.PanicReason = "***ERROR*** A stack overflow in task main has been detected."
			return f
		}, false, "stack overflow", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sig, ok := Compute(edit(t, rep, c.edit))
			if !ok {
				t.Fatal("no signature")
			}
			if (sig.Fingerprint == base.Fingerprint) != c.same {
				t.Fatalf("same group %v, want %v: %+v", !c.same, c.same, sig)
			}
			if sig.Fault != c.wantFault || (c.wantTitle != "" && sig.Title != c.wantTitle) {
				t.Fatalf("fault %q title %q", sig.Fault, sig.Title)
			}
			if len(sig.Frames) > MaxFrames {
				t.Fatalf("%d frames", len(sig.Frames))
			}
		})
	}
}

func TestNoSignature(t *testing.T) {
	for _, in := range []string{``, `{`, `null`, `{"threads":[]}`, `{"threads":[{"crashed":true,"frames":[{"function":"??"}]}]}`} {
		if sig, ok := Compute([]byte(in)); ok {
			t.Errorf("%q: %+v", in, sig)
		}
	}
}

// FuzzCompute: reports come from devices; any input gives a bounded signature or none, never a panic.
func FuzzCompute(f *testing.F) {
	f.Add(decodedReport(f, "esp32c3"))
	f.Add(decodedReport(f, "esp32_bin"))
	f.Add([]byte(`{"panic_reason":"assert failed: f a.c:1 (x)","threads":[{"crashed":true,"frames":[{"function":"a","pc":1}]}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		sig, ok := Compute(in)
		if !ok {
			return
		}
		if len(sig.Fingerprint) != 64 || len(sig.Frames) > MaxFrames || len(sig.Fault) > maxName || sig.Fault == "" ||
			len(sig.Title) > maxTitle || len(sig.Culprit) > maxCulprit || !utf8.ValidString(sig.Title) || !utf8.ValidString(sig.Culprit) {
			t.Fatalf("%+v", sig)
		}
		again, _ := Compute(in)
		if again.Fingerprint != sig.Fingerprint {
			t.Fatal("not deterministic")
		}
	})
}

// BenchmarkCompute is the signature alone, over a real decoded report.
func BenchmarkCompute(b *testing.B) {
	rep := decodedReport(b, "esp32c3")
	for b.Loop() {
		if _, ok := Compute(rep); !ok {
			b.Fatal("no signature")
		}
	}
}

// BenchmarkDecodeSignature is what grouping adds to the decoder's own work (what
// `iotsupport bench --scenario decode` measures: the in-process decoder with a warm ELF
// index): the signature of each report. Compare decode with decode+signature.
func BenchmarkDecodeSignature(b *testing.B) {
	for _, name := range []string{"esp32", "esp32c3", "esp32c6"} {
		dir := filepath.Join("..", "..", "..", "shared", "testdata", "esp-coredump", name)
		elfBytes, err := os.ReadFile(filepath.Join(dir, "app.elf"))
		if err != nil {
			b.Fatal(err)
		}
		dump, err := os.ReadFile(filepath.Join(dir, "coredump.b64"))
		if err != nil {
			b.Fatal(err)
		}
		ix, err := elfsym.New(bytes.NewReader(elfBytes))
		if err != nil {
			b.Fatal(err)
		}
		for _, grouped := range []bool{false, true} {
			sub := name + "/decode"
			if grouped {
				sub += "+signature"
			}
			b.Run(sub, func(b *testing.B) {
				for b.Loop() {
					rep, err := espcore.Decode(dump, ix, espcore.Options{})
					if err != nil {
						b.Fatal(err)
					}
					if grouped {
						if _, ok := ComputeReport(rep); !ok {
							b.Fatal("no signature")
						}
					}
				}
			})
		}
	}
}

// BenchmarkComputeReport is the signature of a decoded report, as the decode job takes it.
func BenchmarkComputeReport(b *testing.B) {
	var rep espcore.Report
	if err := json.Unmarshal(decodedReport(b, "esp32c3"), &rep); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok := ComputeReport(&rep); !ok {
			b.Fatal("no signature")
		}
	}
}
