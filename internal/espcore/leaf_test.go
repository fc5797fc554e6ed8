package espcore

import (
	"path/filepath"
	"testing"
)

// noCFIFor is the real app ELF with the unwind info of one function removed, as for
// a leaf written in assembly or built without debug info.
type noCFIFor struct {
	ixSym
	lo, hi uint64
}

func (s noCFIFor) CFARule(pc uint64) (Row, bool) {
	if pc >= s.lo && pc < s.hi {
		return Row{}, false
	}
	return s.ixSym.CFARule(pc)
}

// A blocked task whose innermost function is a leaf without unwind info: its caller is
// in ra, not on the stack; the stack's first return address is the caller's caller.
func TestRISCVLeafWithoutCFI(t *testing.T) {
	for _, c := range []string{"esp32c3", "esp32c6"} {
		ix := loadIndex(t, c)
		exp := parseExpected(t, filepath.Join(testdataDir, c, "expected_output"))
		var want refThread
		for _, th := range exp.threads {
			if th.name == "esp_timer" {
				want = th
			}
		}
		if len(want.frames) < 3 || want.frames[0].fn != "vPortClearInterruptMaskFromISR" {
			t.Fatalf("%s: reference has no esp_timer thread blocked in the leaf: %+v", c, want)
		}
		ref, err := Decode(readDump(t, c), ix, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var leafPC uint32
		for _, th := range ref.Threads {
			if th.TCB == want.tcb {
				leafPC = th.Frames[0].PC
			}
		}
		lo, hi, ok := funcRange(t, ix, leafPC)
		if !ok {
			t.Fatalf("%s: no symbol for 0x%x", c, leafPC)
		}
		rep, err := DecodeWith(readDump(t, c), noCFIFor{ixSym{ix}, lo, hi}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range rep.Threads {
			if th.TCB != want.tcb {
				continue
			}
			if len(th.Frames) != len(want.frames) {
				t.Fatalf("%s: %d frames %+v, want %d", c, len(th.Frames), th.Frames, len(want.frames))
			}
			for i, wf := range want.frames {
				if !frameMatches(ix, wf, th.Frames[i]) {
					t.Errorf("%s frame #%d: 0x%x %s [%s], want 0x%x %s", c, i, th.Frames[i].PC, th.Frames[i].Function, th.Frames[i].Method, wf.pc, wf.fn)
				}
			}
			if th.Frames[1].Method != MethodRA {
				t.Errorf("%s: caller found by %s, want %s", c, th.Frames[1].Method, MethodRA)
			}
		}
	}
}

// funcRange is the extent of the ELF symbol holding pc.
func funcRange(t *testing.T, ix interface {
	SymbolAt(uint64) (string, uint64, bool)
}, pc uint32) (lo, hi uint64, ok bool) {
	name, off, ok := ix.SymbolAt(uint64(pc))
	if !ok {
		return 0, 0, false
	}
	lo = uint64(pc) - off
	hi = lo + 1
	for ; hi < lo+0x10000; hi++ {
		if n, _, ok := ix.SymbolAt(hi); !ok || n != name {
			break
		}
	}
	return lo, hi, true
}

// Without the app ELF the dump still yields everything but names and lines: chip, crashed
// task, panic reason, registers, exception, each task's name and the raw return
// addresses, in the reference decoder's order.
func TestDecodeWithoutELF(t *testing.T) {
	for _, c := range testCases(t) {
		exp := parseExpected(t, filepath.Join(testdataDir, c, "expected_output"))
		withELF, err := Decode(readDump(t, c), loadIndex(t, c), Options{})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Decode(readDump(t, c), nil, Options{})
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if rep.Chip != withELF.Chip || rep.Arch != withELF.Arch || rep.ELFSHA256 != "" {
			t.Errorf("%s: chip %s arch %s elf %q", c, rep.Chip, rep.Arch, rep.ELFSHA256)
		}
		if rep.CrashedTask == nil || rep.CrashedTask.TCB != exp.crashedTCB || rep.CrashedTask.Name != exp.crashedName {
			t.Errorf("%s: crashed task %+v, want 0x%x %q", c, rep.CrashedTask, exp.crashedTCB, exp.crashedName)
		}
		if rep.PanicReason != exp.panic {
			t.Errorf("%s: panic %q, want %q", c, rep.PanicReason, exp.panic)
		}
		if (rep.Exception == nil) != (withELF.Exception == nil) || rep.Exception != nil && rep.Exception.Cause != withELF.Exception.Cause {
			t.Errorf("%s: exception %+v, want %+v", c, rep.Exception, withELF.Exception)
		}
		regs := map[string]uint32{}
		for _, r := range rep.Registers {
			regs[r.Name] = r.Value
		}
		for _, n := range []string{"pc", "sp", "ra", "a0", "a1"} {
			if v, ok := exp.regs[n]; ok && regs[n] != v {
				t.Errorf("%s: register %s = 0x%x, want 0x%x", c, n, regs[n], v)
			}
		}
		if len(rep.Threads) != len(exp.threads) {
			t.Fatalf("%s: %d threads, want %d", c, len(rep.Threads), len(exp.threads))
		}
		for i, et := range exp.threads {
			th := rep.Threads[i]
			if th.TCB != et.tcb || th.Name != et.name {
				t.Errorf("%s thread %d: 0x%x %q, want 0x%x %q", c, i+1, th.TCB, th.Name, et.tcb, et.name)
			}
			// The reference's frames, in order; frame 0 from the registers. Without the ELF
			// a RISC-V stack scan may also list stale code addresses between them.
			want := []uint32{}
			for j, f := range et.frames {
				if j == 0 {
					want = append(want, withELF.Threads[i].Frames[0].PC)
				} else if f.hasPC && f.pc != want[len(want)-1] {
					want = append(want, f.pc)
				}
			}
			var got []uint32
			for _, f := range th.Frames {
				got = append(got, f.PC)
			}
			k := 0
			for _, pc := range got {
				if k < len(want) && pc == want[k] {
					k++
				}
			}
			if k < len(want) || len(got) < 2 && len(want) >= 2 || len(want) >= 2 && got[1] != want[1] {
				t.Errorf("%s thread %d %s: frames %x, want %x in order (frame 1 exactly)", c, i+1, et.name, got, want)
			}
			for _, f := range th.Frames {
				if f.Function != "??" || f.File != "" {
					t.Errorf("%s: frame named without an ELF: %+v", c, f)
				}
			}
		}
	}
}
