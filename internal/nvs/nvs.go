// Package nvs reads and writes ESP-IDF NVS partitions (format version 2, multi-page
// blobs, no encryption): the CSV format of ESP-IDF's nvs_partition_gen.py, a
// generator whose output is byte-identical to `nvs_partition_gen.py generate` for the
// same CSV and size, and a reader that lists what a partition holds.
//
// Layout: 4096-byte pages; a 32-byte header (state, sequence number, version 0xfe,
// CRC32 of bytes 4..28), a 32-byte bitmap of 2-bit entry states, then 126 entries of
// 32 bytes (namespace index, type, span, chunk index, CRC32 of bytes 0..4 and 8..32,
// NUL-padded key[16], data[8]). Strings and blob chunks continue in the entries that
// follow their header; a blob is data chunks (one per page it touches) plus an index.
// CRCs are zlib's crc32 continued from 0xffffffff, as ESP-IDF computes them.
//
// Where ESP-IDF's generator counts characters instead of bytes (non-ASCII keys and
// values) it writes an image the device cannot read; here those are UTF-8 bytes.
package nvs

import (
	"fmt"
	"hash/crc32"
)

// Type is an NVS entry type.
type Type uint8

// Entry types as stored in flash.
const (
	U8     Type = 0x01
	I8     Type = 0x11
	U16    Type = 0x02
	I16    Type = 0x12
	U32    Type = 0x04
	I32    Type = 0x14
	U64    Type = 0x08
	I64    Type = 0x18
	String Type = 0x21
	// Blob is a binary value; written as BlobData chunks plus a BlobIndex (format v2).
	Blob      Type = 0x41
	BlobData  Type = 0x42
	BlobIndex Type = 0x48
)

// Format and limits of the partition layout.
const (
	PageSize       = 4096
	entrySize      = 32
	entriesPerPage = 126
	firstEntry     = 64
	// MinSize is the smallest partition ESP-IDF's generator writes (two data pages and
	// the reserved page the device needs for garbage collection).
	MinSize = 3 * PageSize
	// MaxKeyLen is the longest key or namespace name, in bytes.
	MaxKeyLen = 15
	// MaxStringLen is the longest string, in bytes including its terminating NUL.
	MaxStringLen = 4000

	stateActive = 0xfffffffe
	stateFull   = 0xfffffffc
	version2    = 0xfe
	chunkAny    = 0xff
)

var typeNames = map[Type]string{U8: "u8", I8: "i8", U16: "u16", I16: "i16", U32: "u32", I32: "i32", U64: "u64", I64: "i64",
	String: "string", Blob: "blob", BlobData: "blob_data", BlobIndex: "blob_index"}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

// width is the byte width of an integer type, 0 for others.
func (t Type) width() int {
	switch t {
	case U8, I8:
		return 1
	case U16, I16:
		return 2
	case U32, I32:
		return 4
	case U64, I64:
		return 8
	}
	return 0
}

func (t Type) signed() bool { return t == I8 || t == I16 || t == I32 || t == I64 }

// Item is one row to write: a namespace (every later item belongs to it) or a value.
type Item struct {
	// Line is the CSV line the row starts on (0 when built in code); errors name it.
	Line int
	// Namespace marks a namespace row; Key is then the namespace name.
	Namespace bool
	Key       string
	Type      Type
	// Value is an integer's two's-complement bits (sign-extended for signed types).
	Value uint64
	// Data is a string (without its terminating NUL) or a blob.
	Data []byte
}

// Int is the integer value of an Item of a signed type.
func (it Item) Int() int64 { return int64(it.Value) }

// crc is zlib.crc32(b, 0xffffffff), ESP-IDF's CRC.
func crc(b ...[]byte) uint32 {
	c := uint32(0xffffffff)
	for _, p := range b {
		c = crc32.Update(c, crc32.IEEETable, p)
	}
	return c
}

// entryCRC is the CRC of an entry: bytes 0..4 and 8..32.
func entryCRC(e []byte) uint32 { return crc(e[0:4], e[8:32]) }
