package chips_test

import (
	"bytes"
	"testing"

	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/espcore/espcoretest"
	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

func TestTable(t *testing.T) {
	for _, c := range chips.All {
		if got, ok := chips.ByID(c.ID); !ok || got != c {
			t.Errorf("ByID(%#x) = %v", c.ID, got)
		}
		if got, ok := chips.ByName(c.Name); !ok || got != c {
			t.Errorf("ByName(%s) = %v", c.Name, got)
		}
		if c.Arch.ELFMachine() == 0 || c.Title == "" || !c.InROM(c.ROMLo) || c.InROM(c.ROMHi) {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	if _, ok := chips.ByID(0xFFFF); ok {
		t.Error("0xFFFF is the invalid chip id")
	}
}

// TestEveryChipRoundTrips: each chip of the table is the same chip to image validation,
// to the core dump decoder (in both dump formats) and to ingest.
func TestEveryChipRoundTrips(t *testing.T) {
	for _, c := range chips.All {
		img, err := espimagetest.Synthetic(c.Name, "1.0.0", espimagetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		im, err := espimage.Parse(bytes.NewReader(img), int64(len(img)))
		if err != nil || im.ChipID != c.ID || im.Chip != c.Name || im.Arch != c.Arch {
			t.Errorf("%s: image validation: %+v, %v", c.Name, im, err)
		}

		version := uint32(c.ID)<<16 | 0x0102 // ELF_CRC32_V2_1
		for format, dump := range map[string][]byte{
			"elf":    espcoretest.BuildThreadDump(version, c.Arch.ELFMachine()),
			"binary": espcoretest.BuildDump(uint32(c.ID)<<16|0x0003, ""), // BIN_V2_1
		} {
			rep, err := espcore.Decode(dump, nil, espcore.Options{})
			if err != nil || rep.ChipID != c.ID || rep.Chip != c.Title || rep.Arch != string(c.Arch) {
				t.Errorf("%s %s: decoder: %v, report %+v", c.Name, format, err, rep)
			}
			if h := coredumps.Inspect(dump); !h.Recognized || h.Chip != c.Name || h.Problem != "" {
				t.Errorf("%s %s: ingest: %+v", c.Name, format, h)
			}
		}
		if !coredumps.KnownChip(c.Name) {
			t.Errorf("%s: not a known chip to ingest", c.Name)
		}
	}
}
