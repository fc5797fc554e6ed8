package espcore

import (
	"errors"
	"strings"
)

// Input container kinds: how the dump was wrapped (ESP-FORMATS §2.1). Whether the dump
// itself is in the binary or the ELF format is Header.Format.
const (
	KindELF     = "elf"     // bare ELF core (no header, no checksum; esp-coredump --save-core)
	KindBase64  = "base64"  // UART text, decoded line by line
	KindRaw     = "raw"     // partition data: header + data + checksum
	KindUnknown = "unknown" // none of the above
)

// Problem kinds: what is wrong with a dump's container or header. Ingest stores them (the
// parse_error column before decoding); the decoder refuses a dump only for some of them
// and decodes the others with a warning.
const (
	ProblemNotCoredump      = "not_a_coredump"
	ProblemErased           = "erased_partition"
	ProblemTruncated        = "truncated"
	ProblemBadLength        = "bad_length"
	ProblemChecksumMismatch = "checksum_mismatch"
	ProblemBadELF           = "bad_elf"
)

// Header is what a cheap look at a dump reveals, without decoding it. The decoder reads
// the same container code, so what Inspect says is what Decode sees.
type Header struct {
	Kind    string `json:"kind"`
	Format  string `json:"format,omitempty"` // "binary" or "elf" dump format
	Version uint32 `json:"version"`          // 0 when no known version word was found
	// VersionName is esp-coredump's name of the version ("ELF_CRC32_V2_1").
	VersionName string `json:"version_name,omitempty"`
	ChipID      uint16 `json:"chip_id"`
	// Chip is the chip's title ("ESP32-C3"), or "unknown(0x…)" for an id not in the chip table.
	Chip string `json:"chip,omitempty"`
	// ChipName is the chip's table name ("esp32c3"); "" when the id is not in the table.
	ChipName     string  `json:"chip_name,omitempty"`
	ChipRev      *uint32 `json:"chip_rev,omitempty"`
	ChecksumKind string  `json:"checksum_kind,omitempty"` // crc32, sha256, none; "" when no header was read
	ChecksumOK   bool    `json:"checksum_ok"`
	// AppELFSHAPrefix is the hex prefix of the app ELF's SHA-256 from the
	// ESP_CORE_DUMP_INFO note (ELF formats only).
	AppELFSHAPrefix string `json:"app_elf_sha256_prefix,omitempty"`
	// Recognized: the container and version word (or core ELF header) are those of an
	// ESP-IDF core dump, so the decoder tries it.
	Recognized bool `json:"recognized"`
	// ProblemKind is one of the Problem* kinds, "" when the container looks sound. It is
	// set whenever Problem is, and also for damage the decoder decodes anyway.
	ProblemKind string `json:"problem_kind,omitempty"`
	// Problem says why the decoder refuses the input ("" when it can be tried).
	Problem string `json:"problem,omitempty"`
	// Unsupported: the problem is an unknown version word, not damage.
	Unsupported bool `json:"unsupported,omitempty"`
}

// FormatOf names the data format of a version word: "binary" (major 0) or "elf"
// (major 1) for a known version, "" otherwise.
func FormatOf(version uint32) string {
	vi, ok := versions[uint16(version)]
	switch {
	case !ok:
		return ""
	case vi.elf:
		return "elf"
	}
	return "binary"
}

// Inspect looks at a dump as the device sent it: raw partition bytes, the base64 text
// printed over UART, or a bare core ELF. It never panics and allocates about the size
// of the input at most.
func Inspect(dump []byte) (h Header) {
	if recoverPanics {
		defer func() {
			if recover() != nil {
				h = Header{Kind: KindUnknown, ProblemKind: ProblemNotCoredump, Problem: "internal error inspecting the dump"}
			}
		}()
	}
	c, err := unwrap(dump)
	h = c.hdr
	if err != nil {
		h.Problem = strings.TrimPrefix(err.Error(), "espcore: ")
		h.Unsupported = errors.Is(err, errUnknownVersion)
	}
	return h
}
