package elfsym

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLocationsVsAddr2line cross-checks a spread of PCs against binutils
// addr2line -f -i when it is installed (it reads DWARF for any target).
func TestLocationsVsAddr2line(t *testing.T) {
	bin, err := exec.LookPath("addr2line")
	if err != nil {
		t.Skip("addr2line not installed")
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			var pcs []uint64
			rows := ix.lines.rows
			step := max(1, len(rows)/400)
			for i := 0; i < len(rows); i += step {
				if !rows[i].isEnd() {
					pcs = append(pcs, rows[i].addr, rows[i].addr+1)
				}
			}
			args := []string{"-f", "-i", "-a", "-e", filepath.Join(testdata, c, "app.elf")}
			for _, pc := range pcs {
				args = append(args, fmt.Sprintf("%#x", pc))
			}
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Skipf("addr2line: %v", err)
			}
			got := map[uint64][]Location{}
			var cur uint64
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				l := sc.Text()
				if strings.HasPrefix(l, "0x") {
					cur, _ = strconv.ParseUint(l, 0, 64)
					continue
				}
				if !sc.Scan() {
					break
				}
				fl := sc.Text()
				loc := Location{Function: l}
				if i := strings.LastIndexByte(fl, ':'); i > 0 {
					loc.File = fl[:i]
					loc.Line, _ = strconv.Atoi(strings.Fields(fl[i+1:] + " ")[0])
				}
				got[cur] = append(got[cur], loc)
			}
			// Function chains must agree; lines may not, because addr2line
			// picks rows differently from GDB (which elfsym follows).
			badFn, badLine := 0, 0
			for _, pc := range pcs {
				want := got[pc]
				have := ix.Locations(pc)
				if isCxx(want) {
					continue
				}
				okFn, okLine := len(want) == len(have), len(want) == len(have)
				for i := 0; okFn && i < len(want); i++ {
					okFn = want[i].Function == have[i].Function
					okLine = okLine && want[i].Line == have[i].Line
				}
				if !okFn {
					badFn++
					t.Errorf("pc %#x: addr2line %+v, elfsym %+v", pc, want, have)
				} else if !okLine {
					badLine++
				}
			}
			t.Logf("%d PCs: %d function-chain and %d line differences from addr2line", len(pcs), badFn, badLine)
		})
	}
}

// isCxx reports C++ code, where addr2line prints linkage names (and odd
// inline names) while GDB prints qualified source names.
func isCxx(locs []Location) bool {
	for _, l := range locs {
		if strings.HasPrefix(l.Function, "_Z") || strings.HasPrefix(l.Function, "_GLOBAL_") ||
			strings.Contains(l.File, "libstdc++") || strings.HasSuffix(l.File, ".cc") || strings.HasSuffix(l.File, ".cpp") {
			return true
		}
	}
	return false
}
