// Package chips is the one table of ESP32-family chips. The id is esp_chip_id_t: app
// image headers carry it (espimage), and so does the upper half of a core dump's version
// word (espcore); upload parameters name chips by Name (coredumps, bundles).
package chips

import "debug/elf"

// Arch is a CPU architecture family of ESP chips.
type Arch string

const (
	Xtensa Arch = "xtensa"
	RISCV  Arch = "riscv"
)

// ELFMachine is the e_machine value of ELF files built for the architecture.
func (a Arch) ELFMachine() elf.Machine {
	switch a {
	case Xtensa:
		return elf.EM_XTENSA
	case RISCV:
		return elf.EM_RISCV
	}
	return elf.EM_NONE
}

// Chip is one chip of the table.
type Chip struct {
	ID    uint16
	Name  string // "esp32c3": API parameters, bundle manifests, stored rows
	Title string // "ESP32-C3": as esp-coredump prints it
	Arch  Arch
	// ROM code range: the decoder accepts return addresses there, though the app ELF
	// does not hold them.
	ROMLo, ROMHi uint32
}

// InROM reports whether a is in the chip's ROM code.
func (c Chip) InROM(a uint32) bool { return a >= c.ROMLo && a < c.ROMHi }

// All lists the known chips by id (ESP-FORMATS §1.3; 0xFFFF is the invalid id).
var All = []Chip{
	{0x0000, "esp32", "ESP32", Xtensa, 0x40000000, 0x40070000},
	{0x0002, "esp32s2", "ESP32-S2", Xtensa, 0x40000000, 0x40020000},
	{0x0005, "esp32c3", "ESP32-C3", RISCV, 0x40000000, 0x40060000},
	{0x0009, "esp32s3", "ESP32-S3", Xtensa, 0x40000000, 0x40060000},
	{0x000C, "esp32c2", "ESP32-C2", RISCV, 0x40000000, 0x40090000},
	{0x000D, "esp32c6", "ESP32-C6", RISCV, 0x40000000, 0x40050000},
	{0x0010, "esp32h2", "ESP32-H2", RISCV, 0x40000000, 0x40050000},
	{0x0012, "esp32p4", "ESP32-P4", RISCV, 0x4FC00000, 0x4FC20000},
	{0x0014, "esp32c61", "ESP32-C61", RISCV, 0x40000000, 0x40050000},
	{0x0017, "esp32c5", "ESP32-C5", RISCV, 0x40000000, 0x40060000},
	{0x0019, "esp32h21", "ESP32-H21", RISCV, 0x40000000, 0x40050000},
	{0x001C, "esp32h4", "ESP32-H4", RISCV, 0x40000000, 0x40050000},
	{0x0020, "esp32s31", "ESP32-S31", RISCV, 0x40000000, 0x40060000},
}

// ByID returns the chip with the given esp_chip_id_t.
func ByID(id uint16) (Chip, bool) {
	for _, c := range All {
		if c.ID == id {
			return c, true
		}
	}
	return Chip{}, false
}

// ByName returns the chip with the given lower-case name ("esp32c3").
func ByName(name string) (Chip, bool) {
	for _, c := range All {
		if c.Name == name {
			return c, true
		}
	}
	return Chip{}, false
}
