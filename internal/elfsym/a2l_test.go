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
			bad := 0
			for _, pc := range pcs {
				want := got[pc]
				have := ix.Locations(pc)
				ok := len(want) == len(have)
				for i := 0; ok && i < len(want); i++ {
					ok = want[i].Function == have[i].Function && want[i].File == have[i].File && want[i].Line == have[i].Line
				}
				if !ok {
					bad++
					if bad <= 10 {
						t.Logf("pc %#x: addr2line %+v, elfsym %+v", pc, want, have)
					}
				}
			}
			t.Logf("%d/%d PCs differ from addr2line", bad, len(pcs))
		})
	}
}
