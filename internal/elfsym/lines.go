package elfsym

import (
	"debug/dwarf"
	"errors"
	"io"
	"sort"
	"strings"
)

// lineRow is one address→line entry. line == 0 marks an end of sequence.
type lineRow struct {
	addr uint64
	file uint32
	line uint32 // low 31 bits line, top bit is_stmt
}

const stmtBit = 1 << 31

func (r lineRow) lineNo() int  { return int(r.line &^ stmtBit) }
func (r lineRow) isStmt() bool { return r.line&stmtBit != 0 }
func (r lineRow) isEnd() bool  { return r.line&^stmtBit == 0 }

type lineTable struct {
	rows  []lineRow
	files []string
}

type lineBuilder struct {
	rows    []lineRow
	files   []string
	fileIdx map[string]uint32
	hasZero bool // a section starts at address 0, so address-0 sequences are real
	budget  int64

	raw     []byte // .debug_line, to read file tables as recorded
	lineStr []byte // .debug_line_str
	str     []byte // .debug_str
	order   byteOrder
	cuNames map[*dwarf.LineFile]uint32
}

// startCU maps the CU's file entries to the names GDB displays. debug/dwarf
// joins relative names with the compilation directory and cleans the path;
// GDB does neither when the directory index is 0 (e.g. libstdc++'s
// "atomicity.cc") and keeps "dir/../x" as recorded.
func (lb *lineBuilder) startCU(lr *dwarf.LineReader, stmtList int64) {
	lb.cuNames = map[*dwarf.LineFile]uint32{}
	files := lr.Files()
	raw := lb.rawFileNames(stmtList)
	for i, f := range files {
		if f == nil {
			continue
		}
		name := f.Name
		if raw != nil && len(raw) == len(files) && raw[i] != "" {
			name = raw[i]
		}
		lb.cuNames[f] = lb.intern(name)
	}
}

func (lb *lineBuilder) fileName(f *dwarf.LineFile) uint32 {
	if i, ok := lb.cuNames[f]; ok {
		return i
	}
	return lb.intern(f.Name)
}

// rawFileNames parses a line header's file table, returning names joined
// the way GDB joins them, indexed like LineReader.Files, or nil.
func (lb *lineBuilder) rawFileNames(off int64) []string {
	if off < 0 || off >= int64(len(lb.raw)) || lb.order == nil {
		return nil
	}
	r := &reader{b: lb.raw, pos: int(off), ord: lb.order}
	length := uint64(r.u32())
	offSize := 4
	if length == 0xffffffff {
		length = r.u64()
		offSize = 8
	}
	if r.bad || length > uint64(len(lb.raw)-r.pos) {
		return nil
	}
	r.b = lb.raw[:r.pos+int(length)]
	version := r.u16()
	if version < 2 || version > 5 {
		return nil
	}
	if version >= 5 {
		r.bytes(2) // address_size, segment_selector_size
	}
	r.bytes(offSize) // header_length
	r.bytes(1)       // minimum_instruction_length
	if version >= 4 {
		r.bytes(1) // maximum_operations_per_instruction
	}
	r.bytes(3) // default_is_stmt, line_base, line_range
	opBase := int(r.u8())
	r.bytes(opBase - 1)
	join := func(dirs []string, dir uint64, name string, base uint64) string {
		// Index 0 is the compilation directory (implicit before DWARF 5):
		// GDB leaves such names as recorded.
		if strings.HasPrefix(name, "/") || dir == 0 || dir-base >= uint64(len(dirs)) {
			return name
		}
		d := dirs[dir-base]
		if strings.HasSuffix(d, "/") {
			return d + name
		}
		return d + "/" + name
	}
	if version >= 5 {
		dirs := lb.entries5(r, offSize, nil)
		if dirs == nil {
			return nil
		}
		names := lb.entries5(r, offSize, func(dir uint64, name string) string { return join(dirs, dir, name, 0) })
		if r.bad {
			return nil
		}
		return names
	}
	var dirs []string
	for !r.bad && len(dirs) < 1<<16 {
		d := r.cstring()
		if d == "" {
			break
		}
		dirs = append(dirs, d)
	}
	names := []string{""}
	for !r.bad && len(names) < 1<<16 {
		name := r.cstring()
		if name == "" {
			break
		}
		dir := r.uleb()
		r.uleb() // mtime
		r.uleb() // length
		names = append(names, join(dirs, dir, name, 1))
	}
	if r.bad {
		return nil
	}
	return names
}

// entries5 reads a DWARF 5 directory or file name table. For directories
// (mk == nil) it returns the paths; for files, mk(dirIndex, path).
func (lb *lineBuilder) entries5(r *reader, offSize int, mk func(uint64, string) string) []string {
	nfmt := int(r.u8())
	type fmtEnt struct{ ct, form uint64 }
	fmts := make([]fmtEnt, 0, nfmt)
	for i := 0; i < nfmt && !r.bad; i++ {
		fmts = append(fmts, fmtEnt{r.uleb(), r.uleb()})
	}
	count := r.uleb()
	if r.bad || count > uint64(len(r.b)) {
		return nil
	}
	out := make([]string, 0, count)
	for i := uint64(0); i < count && !r.bad; i++ {
		var name string
		var dir uint64
		for _, f := range fmts {
			var sv string
			var uv uint64
			switch f.form {
			case 0x08: // string
				sv = r.cstring()
			case 0x1f, 0x0e: // line_strp, strp
				var o uint64
				if offSize == 8 {
					o = r.u64()
				} else {
					o = uint64(r.u32())
				}
				sec := lb.lineStr
				if f.form == 0x0e {
					sec = lb.str
				}
				if o < uint64(len(sec)) {
					if end := strings.IndexByte(string(sec[o:min(uint64(len(sec)), o+4096)]), 0); end >= 0 {
						sv = string(sec[o : o+uint64(end)])
					}
				}
			case 0x0f:
				uv = r.uleb()
			case 0x0b:
				uv = uint64(r.u8())
			case 0x05:
				uv = uint64(r.u16())
			case 0x06:
				uv = uint64(r.u32())
			case 0x07:
				uv = r.u64()
			case 0x1e:
				r.bytes(16)
			case 0x09:
				r.bytes(int(min(r.uleb(), uint64(len(r.b)))))
			default:
				r.bad = true
			}
			switch f.ct {
			case 1: // DW_LNCT_path
				name = sv
			case 2: // DW_LNCT_directory_index
				dir = uv
			}
		}
		if mk != nil {
			name = mk(dir, name)
		}
		out = append(out, name)
	}
	if r.bad {
		return nil
	}
	return out
}

func (lb *lineBuilder) intern(name string) uint32 {
	if i, ok := lb.fileIdx[name]; ok {
		return i
	}
	i := uint32(len(lb.files))
	lb.files = append(lb.files, name)
	lb.fileIdx[name] = i
	return i
}

// addCU appends the rows of one CU's line program, recording lines the way
// GDB's DWARF reader does (dwarf2/read.c lnp_state_machine::record_line and
// buildsym's end-of-sequence handling) so row starts match GDB's.
func (lb *lineBuilder) addCU(lr *dwarf.LineReader) {
	var (
		le          dwarf.LineEntry
		seq         []lineRow
		lastFile    = ^uint32(0)
		lastLine    = -1
		lastAddr    uint64
		haveLast    bool
		rowLine     = -1
		nonZeroDisc bool
		stmtAtAddr  bool // an is_stmt row was seen at lastAddr
	)
	reset := func() {
		seq = seq[:0]
		lastFile, lastLine, haveLast, rowLine, nonZeroDisc, stmtAtAddr = ^uint32(0), -1, false, -1, false, false
	}
	// GDB tracks, per address, whether any row there was a statement.
	track := func(addr uint64, stmt bool) {
		if !haveLast || addr != lastAddr {
			stmtAtAddr = false
		}
		lastAddr, haveLast = addr, true
		stmtAtAddr = stmtAtAddr || stmt
	}
	for ; lb.budget > 0; lb.budget-- {
		err := lr.Next(&le)
		if errors.Is(err, io.EOF) || err != nil {
			break
		}
		if le.EndSequence {
			// End marker drops entries at the same address, and an empty
			// sequence is ignored entirely.
			for len(seq) > 0 && seq[len(seq)-1].addr == le.Address {
				seq = seq[:len(seq)-1]
			}
			if len(seq) > 0 && (seq[0].addr != 0 || lb.hasZero) {
				lb.rows = append(lb.rows, seq...)
				lb.rows = append(lb.rows, lineRow{addr: le.Address})
			}
			reset()
			continue
		}
		if le.Line != rowLine {
			nonZeroDisc = le.Discriminator != 0
			rowLine = le.Line
		} else if le.Discriminator != 0 {
			nonZeroDisc = true
		}
		if le.File == nil || le.Line <= 0 {
			track(le.Address, le.IsStmt)
			continue
		}
		fi := lb.fileName(le.File)
		changed := fi != lastFile
		// A non-statement row switching files at an address that already
		// has a statement row is dropped.
		if changed && haveLast && le.Address == lastAddr && !le.IsStmt && stmtAtAddr {
			track(le.Address, le.IsStmt)
			continue
		}
		track(le.Address, le.IsStmt)
		if changed {
			for len(seq) > 0 && seq[len(seq)-1].addr == le.Address {
				seq = seq[:len(seq)-1]
			}
		}
		if changed || le.Line != lastLine || !nonZeroDisc {
			line := uint32(le.Line) &^ stmtBit
			if le.IsStmt {
				line |= stmtBit
			}
			seq = append(seq, lineRow{addr: le.Address, file: fi, line: line})
		}
		lastFile, lastLine = fi, le.Line
	}
}

func (lb *lineBuilder) finish() lineTable {
	rows := lb.rows
	// GDB sorts end markers before other entries at the same address.
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].addr != rows[j].addr {
			return rows[i].addr < rows[j].addr
		}
		return rows[i].isEnd() && !rows[j].isEnd()
	})
	out := make([]lineRow, len(rows))
	copy(out, rows)
	return lineTable{rows: out, files: lb.files}
}

// find returns the row GDB's find_pc_sect_line would pick for pc.
func (lt *lineTable) find(pc uint64) (lineRow, bool) {
	rows := lt.rows
	i := sort.Search(len(rows), func(i int) bool { return rows[i].addr > pc }) - 1
	if i < 0 || rows[i].isEnd() {
		return lineRow{}, false
	}
	// Prefer an is_stmt entry at the same address.
	for j := i; !rows[j].isStmt() && j > 0 && rows[j-1].addr == rows[j].addr && !rows[j-1].isEnd(); {
		j--
		if rows[j].isStmt() {
			i = j
			break
		}
	}
	return rows[i], true
}

// Line returns the source file and line for pc from the line table alone.
func (ix *Index) Line(pc uint64) (file string, line int, ok bool) {
	r, ok := ix.lines.find(pc)
	if !ok || int(r.file) >= len(ix.lines.files) {
		return "", 0, false
	}
	return ix.lines.files[r.file], r.lineNo(), true
}

// LineRowStart returns the address of the line-table row covering pc and
// whether that row is a statement start.
func (ix *Index) LineRowStart(pc uint64) (start uint64, isStmt, ok bool) {
	r, ok := ix.lines.find(pc)
	return r.addr, r.isStmt(), ok
}

// ShowAddress reports whether GDB prints frame #0's address for pc: it omits
// it only when pc is exactly the start of an is_stmt line row
// (frame_show_address: pc != sal.pc || !sal.is_stmt).
func (ix *Index) ShowAddress(pc uint64) bool {
	r, ok := ix.lines.find(pc)
	return !ok || r.addr != pc || !r.isStmt()
}

func (lt *lineTable) memSize() int64 {
	n := int64(len(lt.rows)) * 16
	for _, f := range lt.files {
		n += int64(len(f)) + 16
	}
	return n
}
