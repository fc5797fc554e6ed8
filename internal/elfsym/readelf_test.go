package elfsym

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var riscvRegs = strings.Fields("zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6")

// regNum maps readelf's column names (RISC-V ABI names, or rN) to DWARF
// register numbers.
func regNum(name string) (int, bool) {
	for i, n := range riscvRegs {
		if n == name {
			return i, true
		}
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(name, "r")); err == nil && strings.HasPrefix(name, "r") {
		return n, true
	}
	return 0, false
}

var (
	fdeRE = regexp.MustCompile(`FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)`)
	cfaRE = regexp.MustCompile(`^([a-z0-9]+)([+-]\d+)$`)
)

// TestCFIVsReadelf replays every row of `readelf -wF` (binutils' own CFI
// interpreter) against CFARule, for both architectures.
func TestCFIVsReadelf(t *testing.T) {
	bin, err := exec.LookPath("readelf")
	if err != nil {
		t.Skip("readelf not installed")
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			out, err := exec.Command(bin, "-wF", filepath.Join(testdata, c, "app.elf")).Output()
			if err != nil {
				t.Skipf("readelf: %v", err)
			}
			type row struct {
				cfa  string
				cols map[string]string
			}
			var (
				lo, hi  uint64
				inFDE   bool
				header  []string
				checked int
			)
			rows := map[uint64]row{}
			var order []uint64
			flush := func() {
				for _, loc := range order {
					r := rows[loc]
					got, ok := ix.CFARule(loc)
					if !ok || got.FDEStart != lo {
						continue // address also covered by another FDE
					}
					checked++
					m := cfaRE.FindStringSubmatch(r.cfa)
					if m == nil {
						t.Errorf("%#x: unparsed CFA %q", loc, r.cfa)
						continue
					}
					reg, _ := regNum(m[1])
					off, _ := strconv.ParseInt(m[2], 10, 64)
					if got.CFAReg != reg || got.CFAOffset != off {
						t.Errorf("%#x: CFA r%d%+d, readelf %s", loc, got.CFAReg, got.CFAOffset, r.cfa)
					}
					for name, v := range r.cols {
						n, ok := regNum(name)
						if !ok {
							continue
						}
						rule, has := got.Regs[n]
						var good bool
						switch {
						case v == "u":
							good = !has || rule.Kind == RuleUndefined
						case v == "s":
							good = has && rule.Kind == RuleSameValue
						case strings.HasPrefix(v, "c"):
							o, _ := strconv.ParseInt(v[1:], 10, 64)
							good = has && rule.Kind == RuleOffset && rule.Offset == o
						case strings.HasPrefix(v, "v"):
							o, _ := strconv.ParseInt(strings.TrimPrefix(v, "vc"), 10, 64)
							good = has && rule.Kind == RuleValOffset && rule.Offset == o
						default:
							r2, ok := regNum(v)
							good = ok && has && rule.Kind == RuleRegister && rule.Reg == r2
						}
						if !good {
							t.Errorf("%#x: %s rule %+v (present %v), readelf %s", loc, name, rule, has, v)
						}
					}
				}
				rows, order = map[uint64]row{}, nil
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				line := sc.Text()
				if m := fdeRE.FindStringSubmatch(line); m != nil {
					flush()
					lo, _ = strconv.ParseUint(m[1], 16, 64)
					hi, _ = strconv.ParseUint(m[2], 16, 64)
					inFDE = lo != hi && lo != 0
					header = nil
					continue
				}
				if strings.Contains(line, " CIE ") {
					flush()
					inFDE = false
					continue
				}
				f := strings.Fields(line)
				if !inFDE || len(f) < 2 {
					continue
				}
				if f[0] == "LOC" {
					header = f[2:]
					continue
				}
				loc, err := strconv.ParseUint(f[0], 16, 64)
				if err != nil || loc < lo || loc >= hi {
					continue
				}
				r := row{cfa: f[1], cols: map[string]string{}}
				for i, v := range f[2:] {
					if i < len(header) {
						r.cols[header[i]] = v
					}
				}
				if _, seen := rows[loc]; !seen {
					order = append(order, loc)
				}
				rows[loc] = r // the last row at a location is in effect
			}
			flush()
			t.Logf("%d CFI rows checked against readelf", checked)
			if checked < 500 {
				t.Errorf("only %d rows checked", checked)
			}
		})
	}
}
