// Package espcore decodes ESP-IDF core dumps in pure Go.
//
// Input is what a device uploads: the raw partition (header, data,
// checksum, optional padding), the base64 text printed over UART (decoded
// line by line; log lines and START/END markers are skipped) or a bare ELF
// core. All container versions are handled: binary 0x0001–0x0003 and ELF
// 0x0100–0x0104, CRC32 or SHA-256, chip from the version word (package
// chips). The formats are ESP-IDF's own: components/espcoredump in ESP-IDF and its
// esp-coredump tool, whose output the tests compare against.
//
// Inspect is the cheap look ingest takes at an upload: container, version,
// chip, checksum, app ELF SHA prefix and a problem kind. It runs the same
// container code as Decode, so what ingest records is what the decoder sees.
//
// Backtraces: Xtensa uses the windowed-ABI base save areas spilled to the
// stack; RISC-V uses DWARF CFI from the app ELF, and where no CFI covers a
// PC (ROM code) a stack scan for return addresses that follow a call
// instruction and that unwind consistently. Scanned frames are marked
// "scan". An innermost function without CFI is taken for a leaf when ra
// returns to a call of it: its caller comes from ra (marked "ra"), then the
// walk goes on. Without the app ELF, RISC-V backtraces are pc, ra and a scan
// for code addresses; Xtensa ones need no ELF.
//
// The input is untrusted: thread, segment and frame counts are bounded and
// every read is checked. The fuzz targets seed themselves from the shared
// test data; large seeds make the default 60s minimisation stall the
// fuzzer, so run them with a short minimisation budget:
//
//	go test -run XXX -fuzz '^FuzzContainer$' -fuzztime 60s -fuzzminimizetime 100x ./internal/espcore
package espcore
