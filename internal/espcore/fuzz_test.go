package espcore

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// fakeSym derives code and CFI from fuzz bytes so the unwinders see
// arbitrary (and hostile) tables.
type fakeSym struct {
	code []byte // at 0x40000000
	rows []byte
}

const fakeBase = 0x40000000

func (f fakeSym) Machine() elf.Machine                      { return elf.EM_RISCV }
func (f fakeSym) SHA256() [32]byte                          { return [32]byte{} }
func (f fakeSym) Locations(uint64) []Location               { return nil }
func (f fakeSym) Symbol(uint64) (string, bool)              { return "f", true }
func (f fakeSym) MemberOffset(string, string) (int64, bool) { return 0, false }
func (f fakeSym) DataSymbol(string) (uint64, uint64, bool)  { return 0, 0, false }
func (f fakeSym) IsCode(a uint64) bool {
	return a >= fakeBase && a < fakeBase+uint64(len(f.code))
}
func (f fakeSym) ReadCode(a uint64, n int) ([]byte, bool) {
	if !f.IsCode(a) || n < 0 || a-fakeBase+uint64(n) > uint64(len(f.code)) {
		return nil, false
	}
	o := a - fakeBase
	return f.code[o : o+uint64(n)], true
}
func (f fakeSym) CFARule(pc uint64) (Row, bool) {
	if len(f.rows) < 4 || !f.IsCode(pc) {
		return Row{}, false
	}
	i := int(pc>>1) % (len(f.rows) / 4) * 4
	b := f.rows[i : i+4]
	return Row{CFAReg: int(b[0] % 34), CFAOffset: int64(int8(b[1])) * 4, Regs: map[int]RegRule{
		1: {Kind: RuleKind(b[2] % 7), Offset: int64(int8(b[3])) * 4, Reg: int(b[3] % 40)},
		8: {Kind: RuleOffset, Offset: -8},
	}}, true
}

// watchdog crashes the worker with all stacks when one input takes too
// long, so hangs are reported with their input instead of stalling.
func watchdog() func() {
	t := time.AfterFunc(time.Second, func() {
		buf := make([]byte, 1<<20)
		os.WriteFile(os.Getenv("FZSTACK"), buf[:runtime.Stack(buf, true)], 0o644)
	})
	return func() { t.Stop() }
}

func addDumpSeeds(f *testing.F) {
	ents, err := os.ReadDir(testdataDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(testdataDir, e.Name(), "coredump.b64"))
		if err != nil {
			continue
		}
		f.Add(b)
		if raw, _ := decodeUART(b); len(raw) > 0 {
			f.Add(raw)
		}
	}
}

func FuzzContainer(f *testing.F) {
	addDumpSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		recoverPanics = false
		defer watchdog()()
		Inspect(data)
		c, err := unwrap(data)
		if err != nil || c == nil {
			return
		}
		if c.elfCore == nil {
			parseBinary(c.binBody, chips.Xtensa, c.tasksNum, c.tcbSz, c.segsNum)
			parseBinary(c.binBody, chips.RISCV, c.tasksNum, c.tcbSz, c.segsNum)
		}
		if r, err := DecodeWith(data, nil, Options{}); err == nil {
			_ = r.Text()
		}
	})
}

func FuzzNotes(f *testing.F) {
	ents, _ := os.ReadDir(testdataDir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(testdataDir, e.Name(), "coredump.b64"))
		if err != nil {
			continue
		}
		if c, err := unwrap(b); err == nil && c.elfCore != nil {
			f.Add(c.elfCore)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recoverPanics = false
		parseNotes(data, func(note) bool { return true })
		scanInfoNote(data)
		c, err := parseCoreELF(data)
		if err != nil || c == nil {
			return
		}
		exception(c, chips.Chip{Arch: c.arch})
		for _, th := range c.threads {
			taskName(&c.mem, defaultTCB, th.tcb, "")
		}
	})
}

// unwindInput splits fuzz bytes into registers, a stack at sp and code/CFI.
func unwindInput(data []byte, nregs int) (regs []uint32, m *memory, sym fakeSym) {
	regs = make([]uint32, nregs)
	for i := range regs {
		if len(data) >= 4 {
			regs[i] = binary.LittleEndian.Uint32(data)
			data = data[4:]
		}
	}
	split := len(data) / 2
	stack, rest := data[:split], data[split:]
	m = &memory{}
	base := uint32(0x3fc80000)
	m.add(segment{addr: base, data: stack})
	m.sort()
	half := len(rest) / 2
	return regs, m, fakeSym{code: rest[:half], rows: rest[half:]}
}

// stackSeeds turns the real threads into unwinder seeds: registers (with
// sp rebased onto the fuzz stack) followed by the stack bytes.
func stackSeeds(f *testing.F, a chips.Arch) { collectStackSeeds(f, a) }

func collectStackSeeds(f interface{ Add(...any) }, a chips.Arch) {
	ents, _ := os.ReadDir(testdataDir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(testdataDir, e.Name(), "coredump.b64"))
		if err != nil {
			continue
		}
		c, err := unwrap(b)
		if err != nil {
			continue
		}
		var co *core
		if c.elfCore != nil {
			co, _ = parseCoreELF(c.elfCore)
		} else {
			co, _ = parseBinary(c.binBody, chips.Xtensa, c.tasksNum, c.tcbSz, c.segsNum)
		}
		if co == nil || co.arch != a {
			continue
		}
		for _, th := range co.threads {
			spIdx := 2
			if a == chips.Xtensa {
				spIdx = xA0 + 1
			}
			sp := th.regs[spIdx]
			s := co.mem.find(sp, 4)
			if s == nil {
				continue
			}
			regs := append([]uint32{}, th.regs...)
			regs[spIdx] = 0x3fc80000 + (sp - s.addr)
			var in []byte
			for _, r := range regs {
				in = binary.LittleEndian.AppendUint32(in, r)
			}
			in = append(in, s.data...)
			in = append(in, make([]byte, len(s.data))...)
			f.Add(in)
		}
	}
}

// The unwinders' fuzz targets run with a real chip's ROM range.
var (
	esp32, _   = chips.ByName("esp32")
	esp32c3, _ = chips.ByName("esp32c3")
)

func FuzzXtensaUnwind(f *testing.F) {
	stackSeeds(f, chips.Xtensa)
	f.Fuzz(func(t *testing.T, data []byte) {
		regs, m, sym := unwindInput(data, xNumRegs)
		o := codeOracle{sym: sym, chip: esp32}
		if fr := unwindXtensa(m, o, regs, 64); len(fr) > 64 {
			t.Fatalf("%d frames", len(fr))
		}
		if fr := unwindXtensa(m, codeOracle{chip: esp32}, regs, 64); len(fr) > 64 {
			t.Fatalf("%d frames", len(fr))
		}
	})
}

func FuzzRISCVUnwind(f *testing.F) {
	stackSeeds(f, chips.RISCV)
	f.Fuzz(func(t *testing.T, data []byte) {
		regs, m, sym := unwindInput(data, 32)
		o := codeOracle{sym: sym, chip: esp32c3}
		fr := unwindRISCV(m, o, regs, 64, true)
		if len(fr) > 64 {
			t.Fatalf("%d frames", len(fr))
		}
		symbolize(sym, fr, 256)
	})
}

// FuzzDecodeWithELF decodes mutated dumps against a real app ELF, so the
// CFI walk, the scan fallback and symbolization see hostile stacks.
func FuzzDecodeWithELF(f *testing.F) {
	if _, err := os.Stat(filepath.Join(testdataDir, "esp32c3", "app.elf")); err != nil {
		f.Skip("test data not available")
	}
	for _, c := range []string{"esp32c3", "esp32"} {
		if raw, _ := decodeUART(readDump(f, c)); len(raw) > 0 {
			f.Add(raw)
		}
	}
	var syms []Symbolizer
	f.Fuzz(func(t *testing.T, data []byte) {
		recoverPanics = false
		if syms == nil {
			syms = []Symbolizer{ixSym{loadIndex(t, "esp32c3")}, ixSym{loadIndex(t, "esp32")}}
		}
		for _, s := range syms {
			if r, err := DecodeWith(data, s, Options{}); err == nil {
				_ = r.Text()
			}
		}
	})
}
