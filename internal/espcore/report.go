package espcore

// Report is the decoded core dump. Addresses are plain numbers in JSON.
type Report struct {
	Input           string         `json:"input"`       // elf, raw, base64
	DumpFormat      string         `json:"dump_format"` // binary or elf
	Version         uint32         `json:"version"`
	VersionName     string         `json:"version_name,omitempty"`
	Chip            string         `json:"chip"`
	ChipID          uint16         `json:"chip_id"`
	ChipRev         *uint32        `json:"chip_rev,omitempty"`
	Arch            string         `json:"arch"`
	Checksum        ChecksumStatus `json:"checksum"`
	AppELFSHAPrefix string         `json:"app_elf_sha256_prefix,omitempty"`
	ELFSHA256       string         `json:"elf_sha256,omitempty"`
	ELFMatch        *bool          `json:"elf_match,omitempty"` // nil when the dump carries no prefix or no ELF was given
	CrashedTask     *TaskRef       `json:"crashed_task,omitempty"`
	CrashedSkipped  bool           `json:"crashed_task_skipped,omitempty"`
	ISRContext      *bool          `json:"isr_context,omitempty"`
	PanicReason     string         `json:"panic_reason,omitempty"`
	Exception       *Exception     `json:"exception,omitempty"`
	Registers       []Register     `json:"registers"`
	Threads         []Thread       `json:"threads"`
	Memory          []MemRegion    `json:"memory"`
	Warnings        []string       `json:"warnings,omitempty"`
}

// TaskRef names a task by TCB address.
type TaskRef struct {
	TCB  uint32 `json:"tcb"`
	Name string `json:"name"`
}

// Exception is the crash cause. Xtensa fills ExcVAddr/EPC/EPS; RISC-V
// fills MTVal/MEPC/MStatus from the stacked RvExcFrame.
type Exception struct {
	Cause     uint32     `json:"cause"`
	CauseName string     `json:"cause_name"`
	ExcVAddr  *uint32    `json:"excvaddr,omitempty"`
	EPC       []Register `json:"epc,omitempty"`
	EPS       []Register `json:"eps,omitempty"`
	MTVal     *uint32    `json:"mtval,omitempty"`
	MEPC      *uint32    `json:"mepc,omitempty"`
	MStatus   *uint32    `json:"mstatus,omitempty"`
}

// Register is a named 32-bit register value.
type Register struct {
	Name   string `json:"name"`
	Value  uint32 `json:"value"`
	Symbol string `json:"symbol,omitempty"` // for code addresses (pc, ra)
}

// Thread is one task with its backtrace.
type Thread struct {
	Index        int     `json:"index"` // 1-based, GDB thread id
	TCB          uint32  `json:"tcb"`
	Name         string  `json:"name"`
	Crashed      bool    `json:"crashed,omitempty"`
	State        string  `json:"state,omitempty"`
	Priority     *uint32 `json:"priority,omitempty"`
	BasePriority *uint32 `json:"base_priority,omitempty"`
	StackLow     uint32  `json:"stack_low,omitempty"`
	StackHigh    uint32  `json:"stack_high,omitempty"`
	StackTop     uint32  `json:"stack_top,omitempty"`
	StackUsed    *uint32 `json:"stack_used,omitempty"`
	StackFree    *uint32 `json:"stack_free,omitempty"`
	Corrupted    string  `json:"corrupted,omitempty"`
	Frames       []Frame `json:"frames"`
	Truncated    bool    `json:"truncated,omitempty"`
}

// Frame is one backtrace entry; inlined calls share the PC of their caller.
type Frame struct {
	PC       uint32 `json:"pc"`
	Function string `json:"function"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Inlined  bool   `json:"inlined,omitempty"`
	Method   string `json:"method"`
}

// MemRegion summarises a captured memory segment.
type MemRegion struct {
	Address uint32 `json:"address"`
	Size    uint32 `json:"size"`
	Kind    string `json:"kind"` // tcb, stack, data
	Exec    bool   `json:"exec,omitempty"`
}
