package elfsym

import "debug/dwarf"

// cuTypes collects one CU's struct/union layouts and typedefs; flush keeps
// only the first definition per name so memory stays small.
type cuTypes struct {
	structs  map[dwarf.Offset]*cuStruct
	typedefs map[dwarf.Offset]cuTypedef
	quals    map[dwarf.Offset]dwarf.Offset // const/volatile → underlying
}

type cuStruct struct {
	name    string
	size    int64 // DW_AT_byte_size, -1 if absent
	members []cuMember
}

type cuMember struct {
	name string
	off  int64
	typ  dwarf.Offset
}

type cuTypedef struct {
	name   string
	target dwarf.Offset
}

func newCUTypes() cuTypes {
	return cuTypes{
		structs:  map[dwarf.Offset]*cuStruct{},
		typedefs: map[dwarf.Offset]cuTypedef{},
		quals:    map[dwarf.Offset]dwarf.Offset{},
	}
}

func (c *cuTypes) observe(e *dwarf.Entry, inStruct dwarf.Offset) {
	if c.structs == nil {
		return
	}
	switch e.Tag {
	case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagClassType:
		name, _ := e.Val(dwarf.AttrName).(string)
		size, ok := e.Val(dwarf.AttrByteSize).(int64)
		if !ok {
			size = -1
		}
		c.structs[e.Offset] = &cuStruct{name: name, size: size}
	case dwarf.TagTypedef:
		name, _ := e.Val(dwarf.AttrName).(string)
		t, _ := e.Val(dwarf.AttrType).(dwarf.Offset)
		if name != "" && t != 0 {
			c.typedefs[e.Offset] = cuTypedef{name: name, target: t}
		}
	case dwarf.TagConstType, dwarf.TagVolatileType:
		if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
			c.quals[e.Offset] = t
		}
	case dwarf.TagMember:
		s := c.structs[inStruct]
		if s == nil {
			return
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		t, _ := e.Val(dwarf.AttrType).(dwarf.Offset)
		off, ok := memberOffset(e)
		if !ok {
			return
		}
		s.members = append(s.members, cuMember{name: name, off: off, typ: t})
	}
}

func memberOffset(e *dwarf.Entry) (int64, bool) {
	switch v := e.Val(dwarf.AttrDataMemberLoc).(type) {
	case int64:
		return v, true
	case []byte:
		// DWARF 2 style: DW_OP_plus_uconst <uleb>.
		if len(v) >= 2 && v[0] == 0x23 {
			u, n := uleb(v[1:])
			if n > 0 {
				return int64(u), true
			}
		}
		return 0, false
	case nil:
		if bits, ok := e.Val(dwarf.AttrDataBitOffset).(int64); ok {
			return bits / 8, true
		}
		// Union members have no location: offset 0.
		return 0, true
	}
	return 0, false
}

// resolve follows typedefs and qualifiers to a struct in this CU.
func (c *cuTypes) resolve(off dwarf.Offset) *cuStruct {
	for i := 0; i < 16; i++ {
		if s, ok := c.structs[off]; ok {
			return s
		}
		if t, ok := c.typedefs[off]; ok {
			off = t.target
			continue
		}
		if q, ok := c.quals[off]; ok {
			off = q
			continue
		}
		return nil
	}
	return nil
}

// flatten lists members, hoisting anonymous struct/union members the way
// C (and a GDB expression like ((TCB_t*)0)->x) sees them.
func (c *cuTypes) flatten(s *cuStruct, base int64, out map[string]int64, depth int, budget *int) {
	if depth > 8 {
		return
	}
	for _, m := range s.members {
		// Anonymous members can fan out exponentially in damaged DWARF.
		if *budget--; *budget < 0 {
			return
		}
		if m.name != "" {
			if _, dup := out[m.name]; !dup {
				out[m.name] = base + m.off
			}
			continue
		}
		if inner := c.resolve(m.typ); inner != nil {
			c.flatten(inner, base+m.off, out, depth+1, budget)
		}
	}
}

func (c *cuTypes) flush(types map[string]map[string]int64, sizes map[string]int64, pending map[string]string, intern func(string) string) {
	add := func(name string, s *cuStruct) {
		if name == "" || s == nil || len(s.members) == 0 {
			return
		}
		if _, ok := types[name]; ok {
			return
		}
		m := map[string]int64{}
		budget := 1 << 14
		c.flatten(s, 0, m, 0, &budget)
		mm := make(map[string]int64, len(m))
		for k, v := range m {
			mm[intern(k)] = v
		}
		types[intern(name)] = mm
		if s.size >= 0 {
			sizes[intern(name)] = s.size
		}
	}
	for _, s := range c.structs {
		add(s.name, s)
	}
	for off, t := range c.typedefs {
		s := c.resolve(off)
		if s != nil && len(s.members) == 0 && s.name != "" {
			// Typedef of a declaration: alias by the struct's name once
			// all CUs are read.
			if _, ok := pending[t.name]; !ok {
				pending[intern(t.name)] = intern(s.name)
			}
			continue
		}
		add(t.name, s)
	}
}

// TypeSize returns sizeof a struct or union by tag or typedef name.
func (ix *Index) TypeSize(name string) (int64, bool) {
	n, ok := ix.sizes[name]
	return n, ok
}

// MemberOffset returns the byte offset of member in the struct or union
// named structType (a struct tag like "tskTaskControlBlock" or a typedef
// like "TCB_t"). Members of anonymous nested structs/unions are found too.
func (ix *Index) MemberOffset(structType, member string) (int64, bool) {
	m, ok := ix.types[structType]
	if !ok {
		return 0, false
	}
	off, ok := m[member]
	return off, ok
}

func uleb(b []byte) (uint64, int) {
	var v uint64
	var shift uint
	for i, c := range b {
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v, i + 1
		}
		if i > 16 {
			return 0, 0
		}
	}
	return 0, 0
}

func sleb(b []byte) (int64, int) {
	var v int64
	var shift uint
	for i, c := range b {
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, i + 1
		}
		if i > 16 {
			return 0, 0
		}
	}
	return 0, 0
}
