package coredumps

import (
	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Containers: how the dump arrived (ESP-FORMATS §2.1).
const (
	ContainerRaw     = espcore.KindRaw     // header + data + checksum, as in the flash partition
	ContainerBase64  = espcore.KindBase64  // the UART text: base64 lines, optionally with markers and log lines
	ContainerELF     = espcore.KindELF     // a bare core ELF (esp-coredump --save-core)
	ContainerUnknown = espcore.KindUnknown // not recognisable as a core dump; stored anyway
)

// Problems found at ingest (the parse_error column). Empty means none.
const (
	ProblemNotCoredump      = espcore.ProblemNotCoredump
	ProblemErased           = espcore.ProblemErased
	ProblemTruncated        = espcore.ProblemTruncated
	ProblemBadLength        = espcore.ProblemBadLength
	ProblemChecksumMismatch = espcore.ProblemChecksumMismatch
	ProblemBadELF           = espcore.ProblemBadELF
)

// Header is ingest's view of espcore.Inspect: what the upload row stores.
type Header struct {
	Container string
	// Version is the version word: (chip_id << 16) | (major << 8) | minor; 0 when unknown.
	Version uint32
	// Chip is the chip named by the version word's chip id ("" when unknown).
	Chip string
	// ChecksumOK is nil when the dump carries no checksum to verify (bare ELF, UART V1).
	ChecksumOK *bool
	// AppELFSHAPrefix is the hex prefix of the app ELF's SHA-256 from the ESP_CORE_DUMP_INFO
	// note (ELF formats only).
	AppELFSHAPrefix string
	// Recognized: the container and version word are those of an ESP-IDF core dump.
	Recognized bool
	// Problem is one of the Problem* kinds, "" when the header looks sound.
	Problem string
}

// Format is "elf" or "binary" for a recognised version word, "" otherwise.
func (h Header) Format() string { return FormatOf(h.Version) }

// FormatOf names the data format of a version word: major 0 = binary, major 1 = ELF.
func FormatOf(version uint32) string { return espcore.FormatOf(version) }

// KnownChip reports whether name (lower case) is an ESP32-family chip.
func KnownChip(name string) bool {
	_, ok := chips.ByName(name)
	return ok
}

// Inspect looks at a dump as the device sent it, with the decoder's own container code,
// so ingest and decoding agree on what the dump is.
func Inspect(dump []byte) Header {
	h := espcore.Inspect(dump)
	out := Header{Container: h.Kind, Version: h.Version, Chip: h.ChipName, AppELFSHAPrefix: h.AppELFSHAPrefix,
		Recognized: h.Recognized, Problem: h.ProblemKind}
	if h.ChecksumKind != "" && h.ChecksumKind != "none" {
		ok := h.ChecksumOK
		out.ChecksumOK = &ok
	}
	return out
}
