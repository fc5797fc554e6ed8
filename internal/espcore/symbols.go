package espcore

import "debug/elf"

// Location is one symbolized level of a PC: innermost inlined first.
type Location struct {
	Function string
	File     string
	Line     int
	Inlined  bool
}

// Rule kinds for CFI register rules.
type RuleKind int

const (
	RuleUndefined RuleKind = iota
	RuleSameValue
	RuleOffset
	RuleValOffset
	RuleRegister
)

// RegRule says where a caller register is saved.
type RegRule struct {
	Kind   RuleKind
	Offset int64
	Reg    int
}

// Row is a CFI table row: CFA = reg[CFAReg] + CFAOffset.
type Row struct {
	CFAReg    int
	CFAOffset int64
	Regs      map[int]RegRule
}

// Symbolizer is what the decoder needs from the app ELF. It is an interface
// so the unwinders can be fuzzed and tested without a real ELF; the service
// passes an *elfsym.Index through an adapter.
type Symbolizer interface {
	Machine() elf.Machine
	SHA256() [32]byte
	Locations(pc uint64) []Location
	Symbol(pc uint64) (string, bool)
	IsCode(addr uint64) bool
	ReadCode(addr uint64, n int) ([]byte, bool)
	CFARule(pc uint64) (Row, bool)
	MemberOffset(structType, member string) (int64, bool)
	DataSymbol(name string) (addr, size uint64, ok bool)
}
