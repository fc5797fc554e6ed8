package espimage

import "debug/elf"

// Arch is a CPU architecture family of ESP chips.
type Arch string

const (
	ArchXtensa Arch = "xtensa"
	ArchRISCV  Arch = "riscv"
)

// ELFMachine is the e_machine value of ELF files built for the architecture.
func (a Arch) ELFMachine() elf.Machine {
	switch a {
	case ArchXtensa:
		return elf.EM_XTENSA
	case ArchRISCV:
		return elf.EM_RISCV
	}
	return elf.EM_NONE
}

// ChipInfo describes one chip id from esp_chip_id_t.
type ChipInfo struct {
	ID   uint16
	Name string
	Arch Arch
}

// Chips lists the known chip ids (ESP-FORMATS §1.3).
var Chips = []ChipInfo{
	{0x0000, "esp32", ArchXtensa},
	{0x0002, "esp32s2", ArchXtensa},
	{0x0005, "esp32c3", ArchRISCV},
	{0x0009, "esp32s3", ArchXtensa},
	{0x000C, "esp32c2", ArchRISCV},
	{0x000D, "esp32c6", ArchRISCV},
	{0x0010, "esp32h2", ArchRISCV},
	{0x0012, "esp32p4", ArchRISCV},
	{0x0014, "esp32c61", ArchRISCV},
	{0x0017, "esp32c5", ArchRISCV},
	{0x0019, "esp32h21", ArchRISCV},
	{0x001C, "esp32h4", ArchRISCV},
	{0x0020, "esp32s31", ArchRISCV},
}

// ChipByID returns the chip with the given image header chip id.
func ChipByID(id uint16) (ChipInfo, bool) {
	for _, c := range Chips {
		if c.ID == id {
			return c, true
		}
	}
	return ChipInfo{}, false
}

// ChipByName returns the chip with the given lower-case name ("esp32c3").
func ChipByName(name string) (ChipInfo, bool) {
	for _, c := range Chips {
		if c.Name == name {
			return c, true
		}
	}
	return ChipInfo{}, false
}
