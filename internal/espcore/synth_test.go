package espcore

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// Synthetic core ELFs exercise the paths the five real dumps do not reach.

type synthSeg struct {
	addr uint32
	data []byte
}

type synthNote struct {
	name string
	typ  uint32
	desc []byte
}

func u32s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func encNotes(ns []synthNote, padded bool) []byte {
	var b []byte
	for _, n := range ns {
		namesz := len(n.name) + 1
		if padded {
			namesz = (namesz + 3) &^ 3
		}
		b = append(b, u32s(uint32(namesz), uint32(len(n.desc)), n.typ)...)
		nm := make([]byte, (namesz+3)&^3)
		copy(nm, n.name)
		b = append(b, nm...)
		d := make([]byte, (len(n.desc)+3)&^3)
		copy(d, n.desc)
		b = append(b, d...)
	}
	return b
}

func buildCore(machine uint16, threadNotes []synthNote, segs []synthSeg, infoNotes []synthNote, padded bool) []byte {
	type ph struct {
		typ, vaddr uint32
		data       []byte
	}
	phs := []ph{{4, 0, encNotes(threadNotes, padded)}}
	for _, s := range segs {
		phs = append(phs, ph{1, s.addr, s.data})
	}
	phs = append(phs, ph{4, 0, encNotes(infoNotes, padded)})
	h := make([]byte, 52)
	copy(h, "\x7fELF\x01\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(h[16:], 4)
	le.PutUint16(h[18:], machine)
	le.PutUint32(h[20:], 1)
	le.PutUint32(h[28:], 52)
	le.PutUint16(h[40:], 52)
	le.PutUint16(h[42:], 32)
	le.PutUint16(h[44:], uint16(len(phs)))
	off := uint32(52 + 32*len(phs))
	var body []byte
	for _, p := range phs {
		h = append(h, u32s(p.typ, off, p.vaddr, p.vaddr, uint32(len(p.data)), uint32(len(p.data)), 6, 0)...)
		off += uint32(len(p.data))
		body = append(body, p.data...)
	}
	return append(h, body...)
}

func prstatus(tcb uint32, regBlock []byte) []byte {
	d := make([]byte, 72)
	binary.LittleEndian.PutUint32(d[24:], tcb)
	return append(d, regBlock...)
}

func xtensaRegs(pc, ps, a0, a1 uint32) []byte {
	w := make([]uint32, 129)
	w[0], w[1], w[64], w[65] = pc, ps, a0, a1
	return u32s(w...)
}

func tcbBytes(name string, top, prio, stack, end uint32) []byte {
	b := make([]byte, 0x154)
	le := binary.LittleEndian
	le.PutUint32(b[0:], top)
	le.PutUint32(b[0x2c:], prio)
	le.PutUint32(b[0x30:], stack)
	copy(b[0x34:0x44], name)
	le.PutUint32(b[0x48:], end)
	return b
}

// xtensaSynth: two tasks, the first crashed in an ISR with a three-frame
// windowed chain, the second with a fake (corrupted) stack.
func xtensaSynth(padded bool) []byte {
	const tcb1, tcb2, sp0 = 0x3ffb0000, 0x3ffb1000, 0x3ffb2040
	stack := make([]byte, 0x100)
	le := binary.LittleEndian
	// Base save area below sp0 holds frame 1's a0 (ret into frame 2) and a1.
	le.PutUint32(stack[0x40-16:], 0x80001234)
	le.PutUint32(stack[0x40-12:], sp0+0x40)
	// Below frame 1's sp: frame 2 is outermost (a0 = 0).
	le.PutUint32(stack[0x80-16:], 0)
	le.PutUint32(stack[0x80-12:], sp0+0x80)
	extra := u32s(tcb1, 232, 28, 238, 0xdead0000)
	pairs := []uint32{194, 0x60020, 195, 0, 177, 0x40081000, 178, 0}
	for len(pairs) < 32 {
		pairs = append(pairs, 0)
	}
	extra = append(extra, u32s(pairs...)...)
	extra = append(extra, u32s(1)...)
	info := append(u32s(0x00000103), []byte("0123456789abcdef")...)
	info = append(info, make([]byte, 72-len(info))...)
	return buildCore(emXtensa,
		[]synthNote{
			{"CORE", 1, prstatus(tcb1, xtensaRegs(0x40080100, 0x60020, 0x80005678, sp0))},
			{"CORE", 1, prstatus(tcb2, xtensaRegs(0x20000000, 0, 0, 0x20000100))},
		},
		[]synthSeg{
			{tcb1, tcbBytes("crasher", sp0, 5, sp0-0x40, sp0+0xc0)},
			{sp0 - 0x40, stack},
			{tcb2, tcbBytes("broken\x01", 0x20000100, 1, 0x20000000, 0x20001000)},
		},
		[]synthNote{
			{"ESP_CORE_DUMP_INFO", 8266, info},
			{"ESP_EXTRA_INFO", 677, extra},
			{"ESP_PANIC_DETAILS", 679, []byte("Interrupt wdt timeout on CPU0")},
		}, padded)
}

func riscvSynth() []byte {
	regs := make([]uint32, 32)
	regs[0], regs[1], regs[2] = 0x40380010, 0x40380020, 0x3fc80100
	info := append(u32s(0x00050102), []byte("abc")...)
	return buildCore(emRISCV,
		[]synthNote{{"CORE", 1, append(prstatus(0x3fc81000, u32s(regs...)), 0, 0, 0, 0)}},
		[]synthSeg{{0x3fc81000, tcbBytes("t", 0x3fc80100, 1, 0x3fc80000, 0x3fc80200)}, {0x3fc80100, make([]byte, 0x100)}},
		[]synthNote{{"ESP_CORE_DUMP_INFO", 8266, info}, {"ESP_EXTRA_INFO", 677, u32s(0xDEADBEEF, 0)}}, false)
}

func TestSynthXtensa(t *testing.T) {
	for _, padded := range []bool{false, true} {
		d := xtensaSynth(padded)
		for _, in := range [][]byte{d, rewrap(d, 0, verELFSHA256V2, 0, 0)} {
			r, err := DecodeWith(in, nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if r.ISRContext == nil || !*r.ISRContext || r.PanicReason != "Interrupt wdt timeout on CPU0" {
				t.Errorf("isr %v panic %q", r.ISRContext, r.PanicReason)
			}
			if r.CrashedTask == nil || r.CrashedTask.Name != "crasher" || r.Chip != "ESP32" {
				t.Errorf("crashed %+v chip %s", r.CrashedTask, r.Chip)
			}
			e := r.Exception
			if e == nil || e.CauseName != "LoadProhibitedCause" || *e.ExcVAddr != 0xdead0000 || len(e.EPC) != 2 || e.EPC[0].Name != "epc1" || e.EPS[0].Name != "eps2" {
				t.Errorf("exception %+v", e)
			}
			var pcs []uint32
			for _, f := range r.Threads[0].Frames {
				pcs = append(pcs, f.PC)
			}
			if fmt.Sprintf("%x", pcs) != "[40080100 40005678 40001234]" {
				t.Errorf("frames %x", pcs)
			}
			if th := r.Threads[1]; th.Corrupted != "stack" || len(th.Frames) != 1 || th.Name != "broken?" {
				t.Errorf("corrupted thread %+v", th)
			}
			if r.AppELFSHAPrefix != "0123456789abcdef" {
				t.Errorf("sha prefix %q", r.AppELFSHAPrefix)
			}
			txt := r.Text()
			for _, want := range []string{"Crash happened in the interrupt context", "epc1", "LoadProhibitedCause", "App ELF: not given"} {
				if !strings.Contains(txt, want) {
					t.Errorf("text lacks %q", want)
				}
			}
		}
	}
}

func TestSynthRISCVSkippedCrash(t *testing.T) {
	r, err := DecodeWith(riscvSynth(), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.CrashedSkipped || r.CrashedTask != nil || !strings.Contains(r.Text(), "Crashed task has been skipped.") {
		t.Errorf("skipped crash not reported: %+v", r.CrashedTask)
	}
	if r.Chip != "ESP32-C3" || r.Arch != "riscv" || r.Threads[0].Name != "t" {
		t.Errorf("chip %s arch %s name %q", r.Chip, r.Arch, r.Threads[0].Name)
	}
}

func TestThreadCap(t *testing.T) {
	var notes []synthNote
	for i := 0; i < 400; i++ {
		notes = append(notes, synthNote{"CORE", 1, prstatus(uint32(0x3ffb0000+i*0x200), xtensaRegs(0x40080000, 0, 0, 0x3ffc0000))})
	}
	r, err := DecodeWith(buildCore(emXtensa, notes, nil, nil, false), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Threads) > 64 || len(r.Warnings) == 0 {
		t.Errorf("%d threads, warnings %v", len(r.Threads), r.Warnings)
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz seeds from the synthetic
// dumps and the real stacks: ESPCORE_WRITE_SEEDS=1 go test -run WriteFuzzSeeds
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("ESPCORE_WRITE_SEEDS") == "" {
		t.Skip("set ESPCORE_WRITE_SEEDS=1 to regenerate")
	}
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	x, rv := xtensaSynth(false), riscvSynth()
	write("FuzzNotes", "xtensa", x)
	write("FuzzNotes", "xtensa-padded", xtensaSynth(true))
	write("FuzzNotes", "riscv", rv)
	for _, v := range []uint16{verELFCRC32, verELFSHA256, verELFCRC32V21, verELFSHA256V2, verELFSHA256V3} {
		write("FuzzContainer", versions[v].name, rewrap(x, 0, v, 0, 0))
	}
	body := append(u32s(0x3ffb0000, 0x3ffb2000, 0x3ffb2080), tcbBytes("bin", 0x3ffb2000, 1, 0x3ffb1000, 0x3ffb2100)...)
	frame := make([]byte, 0x80)
	copy(frame, u32s(0, 0x40080000, 0x60020, 0, 0x80001000, 0x3ffb2080))
	body = append(body, frame...)
	for _, v := range []uint16{verBinV1, verBinV2, verBinV21} {
		write("FuzzContainer", versions[v].name, rewrap(body, 0, v, 1, 0x154))
	}
	write("FuzzContainer", "uart", uartText(rewrap(rv, 5, verELFCRC32V21, 0, 0)))
	for _, a := range []chips.Arch{chips.Xtensa, chips.RISCV} {
		n := 0
		f := &seedCollector{}
		collectStackSeeds(f, a)
		for _, s := range f.seeds {
			target := "FuzzXtensaUnwind"
			if a == chips.RISCV {
				target = "FuzzRISCVUnwind"
			}
			write(target, fmt.Sprintf("real-%d", n), s)
			n++
		}
	}
}

type seedCollector struct{ seeds [][]byte }

func (s *seedCollector) Add(args ...any) { s.seeds = append(s.seeds, args[0].([]byte)) }
