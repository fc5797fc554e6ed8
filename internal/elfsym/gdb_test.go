package elfsym

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gdbChainScript prints, for each PC, GDB's frame chain as bt would show it
// for that PC: innermost block's function at the PC's line, then each
// enclosing function at the inlined call site (DW_AT_call_file/line, which
// GDB stores as the inlined function symbol's line), parameters removed.
const gdbChainScript = `
import gdb, os
def strip_params(n):
    t = n[:-6] if n.endswith(" const") else n
    if not t.endswith(")"):
        return n
    d = 0
    for i in range(len(t)-1, -1, -1):
        if t[i] == ")": d += 1
        elif t[i] == "(":
            d -= 1
            if d == 0:
                return t[:i]
    return n
def chain(pc):
    b = gdb.block_for_pc(pc)
    sal = gdb.find_pc_line(pc)
    f = sal.symtab.filename if sal.symtab else ""
    l = sal.line
    out = []
    while b is not None and not (b.is_global or b.is_static):
        if b.function is not None:
            out.append("%s@%s:%d" % (strip_params(b.function.print_name), f, l))
            if b.function.symtab is not None:
                f = b.function.symtab.filename
            l = b.function.line
        b = b.superblock
    return out
with open(os.environ["PCS"]) as fh, open(os.environ["OUT"], "w") as o:
    for line in fh:
        pc = int(line.strip(), 0)
        try:
            o.write("%#x %s\n" % (pc, " | ".join(chain(pc))))
        except Exception as e:
            o.write("%#x ERR\n" % pc)
`

// TestLocationsVsGDB compares Locations with GDB's own block and line
// lookup on a spread of PCs. It runs only where gdb-multiarch (with
// Python) is installed; the reference outputs are covered regardless by
// TestLocationsMatchGDB.
func TestLocationsVsGDB(t *testing.T) {
	gdb, err := exec.LookPath("gdb-multiarch")
	if err != nil {
		t.Skip("gdb-multiarch not installed")
	}
	if testing.Short() {
		t.Skip("slow")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "chain.py")
	if err := os.WriteFile(script, []byte(gdbChainScript), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			var pcs []uint64
			rows := ix.lines.rows
			step := max(1, len(rows)/300)
			for i := 0; i < len(rows); i += step {
				pcs = append(pcs, rows[i].addr, rows[i].addr+1)
			}
			var in strings.Builder
			for _, pc := range pcs {
				fmt.Fprintf(&in, "%#x\n", pc)
			}
			pcsFile, outFile := filepath.Join(dir, c+".pcs"), filepath.Join(dir, c+".out")
			if err := os.WriteFile(pcsFile, []byte(in.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(gdb, "-q", "-batch", "-nx", "-x", script, filepath.Join(testdata, c, "app.elf"))
			cmd.Env = append(os.Environ(), "PCS="+pcsFile, "OUT="+outFile)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Skipf("gdb failed: %v %s", err, out)
			}
			f, err := os.Open(outFile)
			if err != nil {
				t.Skipf("gdb produced no output (no Python?): %v", err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			compared, bad := 0, 0
			for i := 0; sc.Scan() && i < len(pcs); i++ {
				want := strings.TrimSpace(strings.TrimPrefix(sc.Text(), fmt.Sprintf("%#x", pcs[i])))
				if want == "" || want == "ERR" {
					continue // no DWARF block: GDB would use the ELF symbol
				}
				var parts []string
				for _, l := range ix.Locations(pcs[i]) {
					parts = append(parts, fmt.Sprintf("%s@%s:%d", l.Function, l.File, l.Line))
				}
				got := strings.Join(parts, " | ")
				compared++
				if got != want {
					// GDB canonicalizes C++ template arguments; we print
					// DW_AT_name as recorded.
					if strings.Contains(want, "<") {
						continue
					}
					bad++
					t.Errorf("pc %#x:\n gdb:     %s\n elfsym:  %s", pcs[i], want, got)
				}
			}
			t.Logf("%d PCs compared with GDB, %d differ", compared, bad)
			if compared < 100 {
				t.Errorf("only %d PCs compared", compared)
			}
		})
	}
}
