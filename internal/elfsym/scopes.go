package elfsym

import (
	"debug/dwarf"
	"sort"
	"strings"
)

// Location is one (possibly inlined) frame for a PC, as GDB prints it.
type Location struct {
	Function string
	File     string
	Line     int
	Inlined  bool // an inlined frame; the last Location is the real function
}

// scope is a subprogram (parent == -1 and depth == 0) or an inlined call.
type scope struct {
	name     string
	callFile int32 // index into lineTable.files, -1 if unknown
	callLine int32
	parent   int32 // enclosing scope index within the same function; -1 for none
	depth    int32
	fn       int32 // index of the top-level subprogram scope
}

type interval struct {
	lo, hi uint64
	scope  int32
}

// scopeTable holds two interval sets: top-level functions and inlined
// calls. Each is sorted by lo with a running max of hi so overlapping
// intervals can be scanned backwards cheaply.
type scopeTable struct {
	scopes []scope
	funcs  []interval
	funcHi []uint64
	inl    []interval
	inlHi  []uint64
}

func sortIntervals(iv []interval) []uint64 {
	sort.Slice(iv, func(i, j int) bool {
		if iv[i].lo != iv[j].lo {
			return iv[i].lo < iv[j].lo
		}
		return iv[i].hi > iv[j].hi
	})
	hi := make([]uint64, len(iv))
	var m uint64
	for i, v := range iv {
		if v.hi > m {
			m = v.hi
		}
		hi[i] = m
	}
	return hi
}

func (st *scopeTable) finish() scopeTable {
	st.funcHi = sortIntervals(st.funcs)
	st.inlHi = sortIntervals(st.inl)
	return *st
}

// covering calls fn for every interval containing pc (bounded).
func covering(iv []interval, maxHi []uint64, pc uint64, fn func(interval)) {
	i := sort.Search(len(iv), func(i int) bool { return iv[i].lo > pc }) - 1
	for n := 0; i >= 0 && maxHi[i] > pc && n < 4096; i, n = i-1, n+1 {
		if pc < iv[i].hi {
			fn(iv[i])
		}
	}
}

// Locations returns the frames GDB shows for pc: innermost inlined function
// first (at pc's own file:line), then each caller at the call site of the
// frame inside it; the last entry is the containing function. It returns
// nil if pc is in no known function and has no line info.
//
// pc is looked up exactly: pass the PC for frame #0 and return address − 1
// for caller frames.
func (ix *Index) Locations(pc uint64) []Location {
	st := &ix.scope
	// Like GDB's blockvector lookup: among overlapping functions (e.g. an
	// assembly routine whose DWARF high_pc runs into the next one) the one
	// starting last wins.
	fnIdx, fnLo, fnSpan := int32(-1), uint64(0), uint64(0)
	covering(st.funcs, st.funcHi, pc, func(v interval) {
		if s := v.hi - v.lo; fnIdx < 0 || v.lo > fnLo || (v.lo == fnLo && s < fnSpan) {
			fnIdx, fnLo, fnSpan = v.scope, v.lo, s
		}
	})
	file, line, hasLine := ix.Line(pc)
	if fnIdx < 0 {
		name, ok := ix.Symbol(pc)
		if !ok && !hasLine {
			return nil
		}
		return []Location{{Function: name, File: file, Line: line}}
	}
	// Innermost inlined scope of this function containing pc.
	inner, innerDepth := fnIdx, int32(0)
	covering(st.inl, st.inlHi, pc, func(v interval) {
		s := &st.scopes[v.scope]
		if s.fn == fnIdx && s.depth > innerDepth {
			inner, innerDepth = v.scope, s.depth
		}
	})
	var out []Location
	for i, n := inner, 0; i >= 0 && n < 256; n++ {
		s := &st.scopes[i]
		out = append(out, Location{Function: s.name, File: file, Line: line, Inlined: s.depth > 0})
		if s.depth == 0 {
			break
		}
		// The enclosing frame is positioned at this call's site.
		file, line = "", int(s.callLine)
		if s.callFile >= 0 && int(s.callFile) < len(ix.lines.files) {
			file = ix.lines.files[s.callFile]
		}
		if s.parent >= 0 {
			i = s.parent
		} else {
			i = s.fn
		}
	}
	return out
}

func (st *scopeTable) memSize() int64 {
	n := int64(len(st.scopes))*40 + int64(len(st.funcs)+len(st.inl))*32
	seen := map[string]bool{}
	for _, s := range st.scopes {
		if !seen[s.name] {
			seen[s.name] = true
			n += int64(len(s.name))
		}
	}
	return n
}

type pendingName struct {
	idx int32
	e   *dwarf.Entry
}

// dwarfBuilder walks all DIEs once.
type dwarfBuilder struct {
	d      *dwarf.Data
	lines  lineBuilder
	scopes scopeTable
	types  map[string]map[string]int64
	sizes  map[string]int64
	alias  map[string]string       // typedef name → struct tag, resolved at the end
	names  map[dwarf.Offset]string // resolved names of origin DIEs
	strs   map[string]string

	dieBudget   int64
	rangeBudget int64
	pending     []pendingName
	cxx         bool                    // current CU is C++
	quals       map[dwarf.Offset]string // C++ scope prefix of DIEs inside namespaces/classes

	cu      cuTypes
	cuFiles []int32 // CU file index → lineTable file index
}

func newDwarfBuilder(d *dwarf.Data) *dwarfBuilder {
	return &dwarfBuilder{
		d:     d,
		lines: lineBuilder{fileIdx: map[string]uint32{}},
		types: map[string]map[string]int64{},
		alias: map[string]string{},
		sizes: map[string]int64{},
		names: map[dwarf.Offset]string{},
		quals: map[dwarf.Offset]string{},
		strs:  map[string]string{},
	}
}

func (b *dwarfBuilder) intern(s string) string {
	if v, ok := b.strs[s]; ok {
		return v
	}
	b.strs[s] = s
	return s
}

type stackEnt struct {
	qual  string // C++ scope prefix ("ns::Class::") for children
	tag   dwarf.Tag
	scope int32 // innermost enclosing function/inline scope, -1 if none
	fn    int32
	strct dwarf.Offset // enclosing struct/union being collected, 0 if none
}

func (b *dwarfBuilder) run() {
	r := b.d.Reader()
	var stack []stackEnt
	top := func() stackEnt {
		if len(stack) == 0 {
			return stackEnt{scope: -1, fn: -1}
		}
		return stack[len(stack)-1]
	}
	for n := int64(0); n < b.dieBudget; n++ {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		parent := top()
		cur := stackEnt{tag: e.Tag, scope: parent.scope, fn: parent.fn, qual: parent.qual}
		if b.cxx {
			b.noteQual(e, parent.qual, &cur)
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			b.finishCU()
			stack = stack[:0]
			parent = stackEnt{scope: -1, fn: -1}
			cur = stackEnt{tag: e.Tag, scope: -1, fn: -1}
			b.startCU(e)
		case dwarf.TagSubprogram:
			if idx := b.addScope(e, -1, -1, 0); idx >= 0 {
				cur.scope, cur.fn = idx, idx
			}
		case dwarf.TagInlinedSubroutine:
			if parent.fn >= 0 {
				depth := int32(1)
				par := int32(-1)
				if parent.scope != parent.fn {
					par = parent.scope
					depth = b.scopes.scopes[par].depth + 1
				}
				if idx := b.addScope(e, par, parent.fn, depth); idx >= 0 {
					cur.scope = idx
				}
			}
		default:
			b.cu.observe(e, parent.strct)
		}
		if e.Tag == dwarf.TagStructType || e.Tag == dwarf.TagUnionType || e.Tag == dwarf.TagClassType {
			cur.strct = e.Offset
		} else {
			cur.strct = 0
		}
		if e.Children {
			switch e.Tag {
			case dwarf.TagEnumerationType, dwarf.TagSubroutineType, dwarf.TagArrayType:
				// Nothing we index lives below these; skipping saves
				// decoding every enumerator.
				r.SkipChildren()
				continue
			}
			stack = append(stack, cur)
		}
	}
	b.finishCU()
	for td, tag := range b.alias {
		if _, ok := b.types[td]; !ok && b.types[tag] != nil {
			b.types[td] = b.types[tag]
			if sz, ok := b.sizes[tag]; ok {
				b.sizes[td] = sz
			}
		}
	}
}

func (b *dwarfBuilder) startCU(e *dwarf.Entry) {
	b.cu = newCUTypes()
	b.cuFiles = b.cuFiles[:0]
	lr, err := b.d.LineReader(e)
	if err != nil || lr == nil {
		return
	}
	lang, _ := e.Val(dwarf.AttrLanguage).(int64)
	// DW_LANG_C_plus_plus, _03, _11, _14: GDB prints qualified names.
	b.cxx = lang == 0x4 || lang == 0x19 || lang == 0x1a || lang == 0x21
	stmt, _ := e.Val(dwarf.AttrStmtList).(int64)
	b.lines.startCU(lr, stmt)
	b.lines.addCU(lr)
	for _, f := range lr.Files() {
		if f == nil {
			b.cuFiles = append(b.cuFiles, -1)
			continue
		}
		b.cuFiles = append(b.cuFiles, int32(b.lines.fileName(f)))
	}
}

func (b *dwarfBuilder) finishCU() {
	for _, p := range b.pending {
		b.scopes.scopes[p.idx].name = b.intern(b.nameOf(p.e, 0))
	}
	b.pending = b.pending[:0]
	if b.cu.structs != nil {
		b.cu.flush(b.types, b.sizes, b.alias, b.intern)
		b.cu = cuTypes{}
	}
}

// addScope records a subprogram or inlined call if it has code ranges.
func (b *dwarfBuilder) addScope(e *dwarf.Entry, parent, fn, depth int32) int32 {
	if b.rangeBudget <= 0 {
		return -1
	}
	ranges, err := b.d.Ranges(e)
	if err != nil || len(ranges) == 0 {
		return -1
	}
	// Shared range lists could otherwise multiply into huge tables.
	b.rangeBudget -= int64(len(ranges)) + 1
	idx := int32(len(b.scopes.scopes))
	if fn < 0 {
		fn = idx
	}
	s := scope{callFile: -1, parent: parent, depth: depth, fn: fn}
	// Named at the end of the CU, once all C++ scopes in it are known.
	b.pending = append(b.pending, pendingName{idx, e})
	if depth > 0 {
		if v, ok := e.Val(dwarf.AttrCallFile).(int64); ok && v >= 0 && v < int64(len(b.cuFiles)) {
			s.callFile = b.cuFiles[v]
		}
		if v, ok := e.Val(dwarf.AttrCallLine).(int64); ok && v > 0 && v < 1<<31 {
			s.callLine = int32(v)
		}
	}
	b.scopes.scopes = append(b.scopes.scopes, s)
	for _, r := range ranges {
		if r[1] <= r[0] || (r[0] == 0 && !b.lines.hasZero) {
			continue
		}
		iv := interval{lo: r[0], hi: r[1], scope: idx}
		if depth == 0 {
			b.scopes.funcs = append(b.scopes.funcs, iv)
		} else {
			b.scopes.inl = append(b.scopes.inl, iv)
		}
	}
	return idx
}

// noteQual records C++ scope prefixes: namespaces and classes extend the
// prefix for their children; subprograms remember theirs so out-of-line
// definitions (DW_AT_specification) can be qualified like GDB does.
func (b *dwarfBuilder) noteQual(e *dwarf.Entry, qual string, cur *stackEnt) {
	switch e.Tag {
	case dwarf.TagNamespace:
		n, _ := e.Val(dwarf.AttrName).(string)
		if n == "" {
			n = "(anonymous namespace)"
		}
		cur.qual = qual + n + "::"
	case dwarf.TagClassType, dwarf.TagStructType, dwarf.TagUnionType:
		if n, _ := e.Val(dwarf.AttrName).(string); n != "" {
			cur.qual = qual + n + "::"
		}
	case dwarf.TagSubprogram:
		if qual != "" && len(b.quals) < 1<<20 {
			b.quals[e.Offset] = b.intern(qual)
		}
	}
}

// nameOf returns the function name GDB prints: DW_AT_name, following
// abstract_origin/specification, qualified with the C++ scope if any.
func (b *dwarfBuilder) nameOf(e *dwarf.Entry, hops int) string {
	name, _ := e.Val(dwarf.AttrName).(string)
	qual, hasQual := b.quals[e.Offset]
	if name != "" && (hasQual || !b.cxx) {
		return qual + name
	}
	if hops > 8 {
		return name
	}
	for _, a := range []dwarf.Attr{dwarf.AttrSpecification, dwarf.AttrAbstractOrigin} {
		off, ok := e.Val(a).(dwarf.Offset)
		if !ok {
			continue
		}
		n, ok := b.names[off]
		if !ok {
			r := b.d.Reader()
			r.Seek(off)
			oe, err := r.Next()
			if err != nil || oe == nil || oe.Offset != off {
				continue
			}
			n = b.intern(b.nameOf(oe, hops+1))
			b.names[off] = n
		}
		if n != "" {
			if name != "" && !strings.HasSuffix(n, name) {
				return name
			}
			return n
		}
	}
	if name != "" {
		return name
	}
	if n, ok := e.Val(dwarf.AttrLinkageName).(string); ok {
		return n
	}
	return ""
}
