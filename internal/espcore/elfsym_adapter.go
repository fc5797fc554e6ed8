package espcore

import (
	"debug/elf"

	"github.com/iotsupport/iotsupport/internal/elfsym"
)

// ixSym adapts *elfsym.Index to Symbolizer.
type ixSym struct{ ix *elfsym.Index }

func (s ixSym) Machine() elf.Machine                    { return s.ix.Machine() }
func (s ixSym) SHA256() [32]byte                        { return s.ix.SHA256() }
func (s ixSym) Symbol(pc uint64) (string, bool)         { return s.ix.Symbol(pc) }
func (s ixSym) IsCode(a uint64) bool                    { return s.ix.IsCode(a) }
func (s ixSym) ReadCode(a uint64, n int) ([]byte, bool) { return s.ix.ReadCode(a, n) }
func (s ixSym) MemberOffset(t, m string) (int64, bool)  { return s.ix.MemberOffset(t, m) }

func (s ixSym) DataSymbol(n string) (uint64, uint64, bool) { return s.ix.DataSymbol(n) }

// SymbolAt is optional for Symbolizers; it gives <func+off> for registers.
func (s ixSym) SymbolAt(a uint64) (string, uint64, bool) { return s.ix.SymbolAt(a) }

func (s ixSym) Locations(pc uint64) []Location {
	ls := s.ix.Locations(pc)
	if len(ls) == 0 {
		return nil
	}
	out := make([]Location, len(ls))
	for i, l := range ls {
		out[i] = Location{Function: l.Function, File: l.File, Line: l.Line, Inlined: l.Inlined}
	}
	return out
}

func (s ixSym) CFARule(pc uint64) (Row, bool) {
	r, ok := s.ix.CFARule(pc)
	if !ok {
		return Row{}, false
	}
	out := Row{CFAReg: r.CFAReg, CFAOffset: r.CFAOffset, Regs: make(map[int]RegRule, len(r.Regs))}
	for k, v := range r.Regs {
		out.Regs[k] = RegRule{Kind: RuleKind(v.Kind), Offset: v.Offset, Reg: v.Reg}
	}
	return out, true
}

// Decode decodes a core dump; ix may be nil when no app ELF is available.
// The error is non-nil only when nothing at all could be decoded.
func Decode(dump []byte, ix *elfsym.Index, opts Options) (*Report, error) {
	if ix == nil {
		return DecodeWith(dump, nil, opts)
	}
	return DecodeWith(dump, ixSym{ix}, opts)
}
