package espcore

import (
	"fmt"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// chipByID looks a version word's chip id up in the chip table; an unknown id keeps a
// name that shows it.
func chipByID(id uint16) (chips.Chip, bool) {
	c, ok := chips.ByID(id)
	if !ok {
		return chips.Chip{Title: fmt.Sprintf("unknown(0x%04x)", id)}, false
	}
	return c, true
}

// Dump format versions (low 16 bits of the version word).
const (
	verBinV1       = 0x0001
	verBinV2       = 0x0002
	verBinV21      = 0x0003
	verELFCRC32    = 0x0100
	verELFSHA256   = 0x0101
	verELFCRC32V21 = 0x0102
	verELFSHA256V2 = 0x0103
	verELFSHA256V3 = 0x0104
)

type verInfo struct {
	name     string
	elf      bool
	sha      bool
	hdrLen   int
	optional bool // checksum may be absent (legacy V1 over UART)
}

var versions = map[uint16]verInfo{
	verBinV1:       {"BIN_V1", false, false, 16, true},
	verBinV2:       {"BIN_V2", false, false, 20, false},
	verBinV21:      {"BIN_V2_1", false, false, 24, false},
	verELFCRC32:    {"ELF_CRC32_V2", true, false, 20, false},
	verELFSHA256:   {"ELF_SHA256_V2", true, true, 20, false},
	verELFCRC32V21: {"ELF_CRC32_V2_1", true, false, 24, false},
	verELFSHA256V2: {"ELF_SHA256_V2_1", true, true, 24, false},
	verELFSHA256V3: {"ELF_SHA256_V2_2", true, true, 12, false},
}

var xtensaCauses = map[uint32]string{
	0: "IllegalInstructionCause", 1: "SyscallCause", 2: "InstructionFetchErrorCause",
	3: "LoadStoreErrorCause", 4: "Level1InterruptCause", 5: "AllocaCause",
	6: "IntegerDivideByZeroCause", 7: "PCValue", 8: "PrivilegedCause",
	9: "LoadStoreAlignmentCause", 12: "InstrPIFDataErrorCause", 13: "LoadStorePIFDataErrorCause",
	14: "InstrPIFAddrErrorCause", 15: "LoadStorePIFAddrErrorCause", 16: "InstTLBMissCause",
	17: "InstTLBMultiHitCause", 18: "InstFetchPrivilegeCause", 20: "InstFetchProhibitedCause",
	24: "LoadStoreTLBMissCause", 25: "LoadStoreTLBMultiHitCause", 26: "LoadStorePrivilegeCause",
	28: "LoadProhibitedCause", 29: "StoreProhibitedCause",
	32: "Coprocessor0Disabled", 33: "Coprocessor1Disabled", 34: "Coprocessor2Disabled",
	35: "Coprocessor3Disabled", 36: "Coprocessor4Disabled", 37: "Coprocessor5Disabled",
	38: "Coprocessor6Disabled", 39: "Coprocessor7Disabled",
	0xFFFF: "InvalidCauseRegister",
	64:     "UnknownException", 65: "DebugException", 66: "DoubleException", 67: "KernelException",
	68: "CoprocessorException", 69: "InterruptWDTTimoutCPU0", 70: "InterruptWDTTimoutCPU1", 71: "CacheError",
}

var riscvCauses = map[uint32]string{
	0: "Instruction address misaligned", 1: "Instruction access fault", 2: "Illegal instruction",
	3: "Breakpoint", 4: "Load address misaligned", 5: "Load access fault",
	6: "Store address misaligned", 7: "Store access fault", 8: "Environment call from U-mode",
	9: "Environment call from S-mode", 11: "Environment call from M-mode",
	12: "Instruction page fault", 13: "Load page fault", 15: "Store page fault",
	0xDEADC0DE: "No valid cause",
}

func causeName(a chips.Arch, c uint32) string {
	var n string
	var ok bool
	switch a {
	case chips.Xtensa:
		n, ok = xtensaCauses[c]
	case chips.RISCV:
		if c&0x80000000 != 0 {
			return fmt.Sprintf("Interrupt %d", c&0x7fffffff)
		}
		n, ok = riscvCauses[c]
	}
	if !ok {
		return "Unknown"
	}
	return n
}

var riscvRegNames = [32]string{"pc", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1",
	"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7",
	"s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6"}

// Xtensa register block indexes in our regset.
const (
	xPC = iota
	xPS
	xLBEG
	xLEND
	xLCOUNT
	xSAR
	xA0
	xNumRegs = xA0 + 16
)

var xtensaRegNames = func() []string {
	n := []string{"pc", "ps", "lbeg", "lend", "lcount", "sar"}
	for i := 0; i < 16; i++ {
		n = append(n, fmt.Sprintf("a%d", i))
	}
	return n
}()
