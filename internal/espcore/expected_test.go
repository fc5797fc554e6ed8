package espcore

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/iotsupport/iotsupport/internal/elfsym"
)

const testdataDir = "../../../shared/testdata/esp-coredump"

func testCases(t testing.TB) []string {
	ents, err := os.ReadDir(testdataDir)
	if err != nil {
		t.Skipf("test data not available: %v", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(testdataDir, e.Name(), "coredump.b64")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

var (
	ixMu    sync.Mutex
	ixCache = map[string]*elfsym.Index{}
)

func loadIndex(t testing.TB, c string) *elfsym.Index {
	ixMu.Lock()
	defer ixMu.Unlock()
	if ix, ok := ixCache[c]; ok {
		return ix
	}
	f, err := os.Open(filepath.Join(testdataDir, c, "app.elf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ix, err := elfsym.New(f)
	if err != nil {
		t.Fatal(err)
	}
	ixCache[c] = ix
	return ix
}

// Parsed reference output.
type refFrame struct {
	pc    uint32 // 0 when GDB printed no address (frame 0 at a line start)
	hasPC bool
	fn    string
	file  string
	line  int
}

type refThread struct {
	tcb    uint32
	name   string
	frames []refFrame
}

type refTask struct {
	name       string
	prio, base uint32
	used, free uint32
}

type expected struct {
	crashedTCB  uint32
	crashedName string
	isr         *bool
	panic       string
	regs        map[string]uint32
	threads     []refThread
	tasks       map[uint32]refTask
}

var (
	reCrashed = regexp.MustCompile(`^Crashed task handle: 0x([0-9a-f]+), name: '([^']*)'`)
	reThread  = regexp.MustCompile(`^=+ THREAD (\d+) \(TCB: 0x([0-9a-f]+), name: '([^']*)'\) =+`)
	reFrame   = regexp.MustCompile(`^#(\d+)\s+(?:(0x[0-9a-f]+) in )?(\S+) \(`)
	reAt      = regexp.MustCompile(` at (\S+):(\d+)$`)
	reReg     = regexp.MustCompile(`^([a-z0-9_]+)\s+(0x[0-9a-f]+)`)
	reTask    = regexp.MustCompile(`^0x([0-9a-f]+)\s+(\S+)\s+(\d+)/(\d+)\s+(\d+)/(\d+)$`)
)

func hex32(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}

func parseExpected(t testing.TB, path string) *expected {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := &expected{regs: map[string]uint32{}, tasks: map[uint32]refTask{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	section := ""
	var cur *refThread
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.Contains(l, "CURRENT THREAD REGISTERS"):
			section = "regs"
			continue
		case strings.Contains(l, "CURRENT THREAD STACK"), strings.Contains(l, "THREADS INFO"):
			section = "other"
			continue
		case strings.Contains(l, "ALL MEMORY REGIONS"):
			section = "mem"
			cur = nil
			continue
		}
		if m := reCrashed.FindStringSubmatch(l); m != nil {
			e.crashedTCB, e.crashedName = hex32(m[1]), m[2]
		}
		if l == "Crash happened in the interrupt context" {
			v := true
			e.isr = &v
		}
		if l == "Crashed task is not in the interrupt context" {
			v := false
			e.isr = &v
		}
		if s, ok := strings.CutPrefix(l, "Panic reason: "); ok {
			e.panic = s
		}
		if section == "regs" {
			if m := reReg.FindStringSubmatch(l); m != nil {
				e.regs[m[1]] = hex32(m[2])
			}
		}
		if m := reTask.FindStringSubmatch(l); m != nil && section == "other" {
			at := func(i int) uint32 { v, _ := strconv.Atoi(m[i]); return uint32(v) }
			e.tasks[hex32(m[1])] = refTask{m[2], at(3), at(4), at(5), at(6)}
		}
		if m := reThread.FindStringSubmatch(l); m != nil {
			e.threads = append(e.threads, refThread{tcb: hex32(m[2]), name: m[3]})
			cur = &e.threads[len(e.threads)-1]
			continue
		}
		if cur != nil {
			if m := reFrame.FindStringSubmatch(l); m != nil {
				fr := refFrame{fn: m[3]}
				if a := reAt.FindStringSubmatch(l); a != nil {
					fr.file = a[1]
					fr.line, _ = strconv.Atoi(a[2])
				}
				if m[2] != "" {
					fr.pc, fr.hasPC = hex32(m[2]), true
				} else if len(cur.frames) > 0 {
					// Outer frame of an inline chain: same PC as the inner one.
					prev := cur.frames[len(cur.frames)-1]
					fr.pc, fr.hasPC = prev.pc, prev.hasPC
				}
				cur.frames = append(cur.frames, fr)
			}
		}
	}
	// GDB's bogus outermost frames (§3.2, §3.3).
	for i := range e.threads {
		fr := e.threads[i].frames
		if n := len(fr); n > 1 && fr[n-1].fn == "??" && fr[n-1].hasPC && (fr[n-1].pc == 0x40000000 || fr[n-1].pc == 0) {
			e.threads[i].frames = fr[:n-1]
		}
	}
	return e
}

func readDump(t testing.TB, c string) []byte {
	b, err := os.ReadFile(filepath.Join(testdataDir, c, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frameMatches compares one frame, normalising ROM names (no ROM ELF here)
// and esp-gdb's __GNU_EH_FRAME_HDR naming quirk (§4.1).
func frameMatches(ix *elfsym.Index, want refFrame, got Frame) bool {
	if want.hasPC && want.pc != got.PC {
		return false
	}
	if !ix.IsCode(uint64(got.PC)) {
		return true
	}
	if want.fn == "__GNU_EH_FRAME_HDR" {
		return true
	}
	return want.fn == got.Function
}

func TestExpectedOutputs(t *testing.T) {
	for _, c := range testCases(t) {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			exp := parseExpected(t, filepath.Join(testdataDir, c, "expected_output"))
			rep, err := Decode(readDump(t, c), ix, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Checksum.OK {
				t.Errorf("checksum: %+v", rep.Checksum)
			}
			if rep.ELFMatch != nil && !*rep.ELFMatch {
				t.Errorf("ELF SHA mismatch")
			}
			if rep.CrashedTask == nil || rep.CrashedTask.TCB != exp.crashedTCB || rep.CrashedTask.Name != exp.crashedName {
				t.Errorf("crashed task %+v, want 0x%x %q", rep.CrashedTask, exp.crashedTCB, exp.crashedName)
			}
			if (exp.isr == nil) != (rep.ISRContext == nil) || exp.isr != nil && *exp.isr != *rep.ISRContext {
				t.Errorf("isr %v, want %v", rep.ISRContext, exp.isr)
			}
			if rep.PanicReason != exp.panic {
				t.Errorf("panic %q, want %q", rep.PanicReason, exp.panic)
			}
			// Exception cause and registers.
			got := map[string]uint32{}
			for _, r := range rep.Registers {
				got[r.Name] = r.Value
			}
			if e := rep.Exception; e != nil && rep.Arch == "xtensa" {
				got["exccause"] = e.Cause
				if e.ExcVAddr != nil {
					got["excvaddr"] = *e.ExcVAddr
				}
				for _, r := range append(e.EPC, e.EPS...) {
					got[r.Name] = r.Value
				}
			}
			if _, ok := exp.regs["exccause"]; ok && rep.Exception == nil {
				t.Errorf("no exception decoded")
			}
			for n, v := range exp.regs {
				g, ok := got[n]
				if !ok && v == 0 && (strings.HasPrefix(n, "epc") || strings.HasPrefix(n, "eps")) {
					continue // binary dumps carry no EPC/EPS; the reference prints zeros
				}
				if !ok || g != v {
					t.Errorf("register %s = 0x%x (present %v), want 0x%x", n, g, ok, v)
				}
			}
			// Threads.
			if len(rep.Threads) != len(exp.threads) {
				t.Errorf("%d threads, want %d", len(rep.Threads), len(exp.threads))
			}
			matched, total := 0, 0
			for i, et := range exp.threads {
				total += len(et.frames)
				if i >= len(rep.Threads) {
					continue
				}
				th := rep.Threads[i]
				if th.TCB != et.tcb || th.Name != et.name {
					t.Errorf("thread %d: 0x%x %q, want 0x%x %q", i+1, th.TCB, th.Name, et.tcb, et.name)
				}
				if rt, ok := exp.tasks[et.tcb]; ok {
					if th.Priority == nil || *th.Priority != rt.prio || th.BasePriority == nil || *th.BasePriority != rt.base {
						t.Errorf("thread %d priority %v/%v, want %d/%d", i+1, th.Priority, th.BasePriority, rt.prio, rt.base)
					}
					if th.StackUsed == nil || *th.StackUsed != rt.used || *th.StackFree != rt.free {
						t.Errorf("thread %d stack %v/%v, want %d/%d", i+1, th.StackUsed, th.StackFree, rt.used, rt.free)
					}
				}
				ok := true
				for j, wf := range et.frames {
					if j >= len(th.Frames) {
						t.Errorf("thread %d: missing frame #%d %x %s", i+1, j, wf.pc, wf.fn)
						ok = false
						continue
					}
					if frameMatches(ix, wf, th.Frames[j]) {
						matched++
						if g := th.Frames[j]; wf.file != "" && (g.Line != wf.line || filepath.Base(g.File) != filepath.Base(wf.file)) {
							t.Errorf("thread %d frame #%d %s: at %s:%d, want %s:%d", i+1, j, wf.fn, g.File, g.Line, wf.file, wf.line)
						}
					} else {
						t.Errorf("thread %d frame #%d: got 0x%x %s [%s], want 0x%x %s", i+1, j, th.Frames[j].PC, th.Frames[j].Function, th.Frames[j].Method, wf.pc, wf.fn)
						ok = false
					}
				}
				// Extra frames are acceptable only past a reference that stopped in ROM.
				if n := len(et.frames); len(th.Frames) > n && ok {
					last := et.frames[n-1]
					if last.fn != "??" {
						t.Errorf("thread %d: %d extra frames after #%d, first 0x%x %s", i+1, len(th.Frames)-n, n-1, th.Frames[n].PC, th.Frames[n].Function)
					}
				}
			}
			t.Logf("%s: frames matched %d/%d", c, matched, total)
		})
	}
}
