package elfsym

import (
	"bufio"
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const testdata = "../../../shared/testdata/esp-coredump"

var cases = []string{"esp32", "esp32_bin", "esp32c3", "esp32c3_bin", "esp32c6"}

var (
	idxMu    sync.Mutex
	idxCache = map[string]*Index{}
)

func loadIndex(t testing.TB, c string) *Index {
	t.Helper()
	idxMu.Lock()
	defer idxMu.Unlock()
	if ix, ok := idxCache[c]; ok {
		return ix
	}
	f, err := os.Open(filepath.Join(testdata, c, "app.elf"))
	if err != nil {
		t.Skipf("test data not available: %v", err)
	}
	defer f.Close()
	ix, err := New(f)
	if err != nil {
		t.Fatalf("New(%s): %v", c, err)
	}
	idxCache[c] = ix
	return ix
}

// frame is one line of a GDB backtrace in expected_output.
type frame struct {
	num      int
	pc       uint64
	hasPC    bool
	function string // "??" when unknown
	file     string
	line     int
}

// group is one PC with the frames GDB printed for it (inline expansion).
type group struct {
	pc       uint64
	frame0   bool
	showAddr bool
	frames   []frame
	where    string
}

var (
	frameRE = regexp.MustCompile(`^#(\d+)\s+(?:(0x[0-9a-f]+) in )?(\S+) \(`)
	atRE    = regexp.MustCompile(`\) at (\S+):(\d+)$`)
	regRE   = regexp.MustCompile(`^(\w+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)(?:\s+<([^>+]+)(?:\+(\d+))?>)?$`)
)

type regAnnot struct {
	name      string
	val       uint64
	sym       string
	off       uint64
	annotated bool
}

// parseExpected extracts backtrace groups and pointer-typed register lines.
func parseExpected(t *testing.T, c string) ([]group, []regAnnot) {
	f, err := os.Open(filepath.Join(testdata, c, "expected_output"))
	if err != nil {
		t.Skipf("expected_output missing: %v", err)
	}
	defer f.Close()
	var (
		groups  []group
		regs    []regAnnot
		curPC   uint64
		section string
		cur     *group
	)
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimRight(sc.Text(), " ")
		if strings.HasPrefix(line, "====") {
			section = line
			cur = nil
			continue
		}
		if m := regRE.FindStringSubmatch(line); m != nil && strings.Contains(section, "REGISTERS") {
			v, _ := strconv.ParseUint(m[2], 0, 64)
			r := regAnnot{name: m[1], val: v, sym: m[4], annotated: m[4] != ""}
			if m[5] != "" {
				r.off, _ = strconv.ParseUint(m[5], 10, 64)
			}
			if m[1] == "pc" {
				curPC = v
			}
			regs = append(regs, r)
			continue
		}
		m := frameRE.FindStringSubmatch(line)
		if m == nil {
			cur = nil
			continue
		}
		fr := frame{function: m[3]}
		fr.num, _ = strconv.Atoi(m[1])
		if m[2] != "" {
			fr.pc, _ = strconv.ParseUint(m[2], 0, 64)
			fr.hasPC = true
		}
		if a := atRE.FindStringSubmatch(line); a != nil {
			fr.file = a[1]
			fr.line, _ = strconv.Atoi(a[2])
		}
		where := c + ":" + strconv.Itoa(ln)
		switch {
		case fr.hasPC:
			groups = append(groups, group{pc: fr.pc, frame0: fr.num == 0, showAddr: true, where: where})
			cur = &groups[len(groups)-1]
		case fr.num == 0:
			// Frame #0 printed without address: its pc is known only for
			// the crashed thread (the register dump).
			crashed := strings.Contains(section, "CURRENT THREAD STACK") || strings.Contains(section, "THREAD 1 ")
			if !crashed || curPC == 0 {
				cur = nil
				continue
			}
			groups = append(groups, group{pc: curPC, frame0: true, where: where})
			cur = &groups[len(groups)-1]
		case cur == nil:
			continue
		}
		cur.frames = append(cur.frames, fr)
	}
	return groups, regs
}

// TestLocationsMatchGDB checks every backtrace PC in the reference outputs.
func TestLocationsMatchGDB(t *testing.T) {
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			groups, _ := parseExpected(t, c)
			if len(groups) < 5 {
				t.Fatalf("parsed only %d frame groups", len(groups))
			}
			checked := 0
			for _, g := range groups {
				look := g.pc
				if !g.frame0 {
					look-- // caller frames: symbolize the return address − 1
				}
				locs := ix.Locations(look)
				if g.frames[0].file == "" {
					// No debug info in GDB: ROM code (named only via the ROM
					// ELF, which we do not have) or ?? frames.
					if len(locs) != 0 {
						t.Errorf("%s: pc %#x: GDB had no line info, got %+v", g.where, g.pc, locs)
					}
					continue
				}
				if len(locs) != len(g.frames) {
					t.Errorf("%s: pc %#x: got %d locations %+v, GDB printed %d frames %+v", g.where, g.pc, len(locs), locs, len(g.frames), g.frames)
					continue
				}
				for i, fr := range g.frames {
					l := locs[i]
					if l.Function != fr.function || l.File != fr.file || l.Line != fr.line {
						t.Errorf("%s: pc %#x frame %d: got %s at %s:%d, GDB %s at %s:%d", g.where, g.pc, i, l.Function, l.File, l.Line, fr.function, fr.file, fr.line)
					}
					if l.Inlined != (i < len(g.frames)-1) {
						t.Errorf("%s: pc %#x frame %d: Inlined=%v", g.where, g.pc, i, l.Inlined)
					}
				}
				// The outermost DWARF function should agree with the symtab.
				if name, ok := ix.Symbol(look); ok && name != locs[len(locs)-1].Function {
					t.Logf("%s: pc %#x: symtab says %s, DWARF %s", g.where, g.pc, name, locs[len(locs)-1].Function)
				}
				if g.frame0 && ix.ShowAddress(g.pc) != g.showAddr {
					t.Errorf("%s: pc %#x: ShowAddress=%v, GDB printed address=%v", g.where, g.pc, !g.showAddr, g.showAddr)
				}
				checked++
			}
			if checked < 5 {
				t.Errorf("only %d groups checked", checked)
			}
			t.Logf("%d PCs checked", checked)
		})
	}
}

// TestSymbolAtMatchesGDB checks the <sym+off> annotations GDB prints for
// pointer-typed registers, and their absence.
func TestSymbolAtMatchesGDB(t *testing.T) {
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			_, regs := parseExpected(t, c)
			n := 0
			for _, r := range regs {
				name, off, ok := ix.SymbolAt(r.val)
				if r.annotated {
					n++
					if !ok || name != r.sym || off != r.off {
						t.Errorf("%s=%#x: got <%s+%d> ok=%v, GDB <%s+%d>", r.name, r.val, name, off, ok, r.sym, r.off)
					}
				} else if ok && r.val > 0x1000 {
					t.Errorf("%s=%#x: got <%s+%d>, GDB printed no symbol", r.name, r.val, name, off)
				}
			}
			if n == 0 {
				t.Error("no annotated registers parsed")
			}
		})
	}
}

func TestSymbol(t *testing.T) {
	ix := loadIndex(t, "esp32c3")
	// panic_abort is FUNC 0x40380686 size 24 in this ELF.
	for _, pc := range []uint64{0x40380686, 0x40380698, 0x4038069d} {
		if n, ok := ix.Symbol(pc); !ok || n != "panic_abort" {
			t.Errorf("Symbol(%#x) = %q, %v", pc, n, ok)
		}
	}
	if n, ok := ix.Symbol(0x40000040); ok {
		t.Errorf("ROM address resolved to %q; ABS symbols must not match", n)
	}
	if ix.Machine() != elf.EM_RISCV {
		t.Errorf("machine %v", ix.Machine())
	}
	if x := loadIndex(t, "esp32"); x.Machine() != elf.EM_XTENSA {
		t.Errorf("esp32 machine %v", x.Machine())
	}
}

func TestMemberOffset(t *testing.T) {
	// ESP-FORMATS.md §2.9, ESP32 v5.3 sample.
	want := map[string]int64{"pxTopOfStack": 0, "uxPriority": 0x2c, "pxStack": 0x30, "pcTaskName": 0x34, "pxEndOfStack": 0x48}
	ix := loadIndex(t, "esp32")
	for _, typ := range []string{"TCB_t", "tskTaskControlBlock"} {
		for m, w := range want {
			if got, ok := ix.MemberOffset(typ, m); !ok || got != w {
				t.Errorf("%s.%s = %d,%v want %d", typ, m, got, ok, w)
			}
		}
	}
	for _, c := range cases {
		ix := loadIndex(t, c)
		for _, m := range []string{"pcTaskName", "pxTopOfStack", "pxStack", "pxEndOfStack", "uxPriority", "uxBasePriority"} {
			if _, ok := ix.MemberOffset("TCB_t", m); !ok {
				t.Errorf("%s: TCB_t.%s missing", c, m)
			}
		}
		if _, ok := ix.MemberOffset("TCB_t", "noSuchMember"); ok {
			t.Errorf("%s: bogus member found", c)
		}
	}
}

func TestCodeAndSections(t *testing.T) {
	ix := loadIndex(t, "esp32c3")
	if !ix.IsCode(0x40380698) || !ix.IsCode(0x42009354) {
		t.Error("IRAM/flash text not code")
	}
	if ix.IsCode(0x3fc8a600) || ix.IsCode(0x40000040) {
		t.Error("data/ROM reported as code")
	}
	b, ok := ix.ReadCode(0x40380686, 4)
	if !ok || len(b) != 4 {
		t.Fatalf("ReadCode: %v %v", b, ok)
	}
	if _, ok := ix.ReadCode(0x40000040, 4); ok {
		t.Error("ReadCode of ROM succeeded")
	}
	if _, ok := ix.ReadCode(0x40380686, -1); ok {
		t.Error("negative length accepted")
	}
	if ix.MemSize() <= 0 {
		t.Error("MemSize")
	}
	var zero [32]byte
	if ix.SHA256() == zero {
		t.Error("SHA256 unset")
	}
}

func TestNewNotELF(t *testing.T) {
	if _, err := New(strings.NewReader("definitely not an ELF file")); err == nil {
		t.Error("expected error")
	}
	if _, err := New(strings.NewReader("")); err == nil {
		t.Error("expected error for empty input")
	}
}

func TestDataSymbolAndTypeSize(t *testing.T) {
	for _, c := range cases {
		ix := loadIndex(t, c)
		for _, n := range []string{"pxReadyTasksLists", "xDelayedTaskList1", "xSuspendedTaskList", "xPendingReadyList"} {
			addr, size, ok := ix.DataSymbol(n)
			if !ok || addr == 0 || size == 0 {
				t.Errorf("%s: DataSymbol(%s) = %#x,%d,%v", c, n, addr, size, ok)
			}
		}
		if _, _, ok := ix.DataSymbol("panic_abort"); ok {
			t.Errorf("%s: function returned as data symbol", c)
		}
		ls, ok := ix.TypeSize("List_t")
		if !ok || ls <= 0 {
			t.Errorf("%s: TypeSize(List_t) = %d,%v", c, ls, ok)
		}
		if _, size, _ := ix.DataSymbol("xSuspendedTaskList"); int64(size) != ls {
			t.Errorf("%s: sizeof List_t %d != xSuspendedTaskList size %d", c, ls, size)
		}
		if ts, ok := ix.TypeSize("TCB_t"); !ok || ts < 0x50 {
			t.Errorf("%s: TypeSize(TCB_t) = %d,%v", c, ts, ok)
		}
	}
}

// TestCxxNames checks GDB-style qualified C++ names (as `list *ADDR` in
// gdb-multiarch 13 names these functions, parameters removed).
func TestCxxNames(t *testing.T) {
	ix := loadIndex(t, "esp32c3")
	for pc, want := range map[uint64]string{
		0x4200d2b6: "__cxxabiv1::__si_class_type_info::__do_find_public_src",
		0x4200d482: "(anonymous namespace)::pool::free",
		0x4200d5e6: "__cxxabiv1::__cxa_free_exception",
		0x42004efe: "static_init_prepare",
		0x4200dc32: "operator new",
		0x4200dd7a: "std::basic_string<char, std::char_traits<char>, std::allocator<char> >::_Rep::_M_set_length_and_sharable",
	} {
		l := ix.Locations(pc)
		if len(l) == 0 || l[len(l)-1].Function != want {
			t.Errorf("%#x: got %+v, want function %s", pc, l, want)
		}
	}
}
