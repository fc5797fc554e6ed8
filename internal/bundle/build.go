package bundle

import (
	"archive/zip"
	"bytes"
	"encoding/json"
)

// Building bundles: the benchmark command uploads bundles built here from the
// shared test ELFs, and the tests build theirs here too (through bundletest),
// so the members' names and version.json's fields have one writer.

// Member is one ZIP entry of a bundle being built.
type Member struct {
	Name string
	Data []byte
}

// VersionJSON returns version.json as the CI build writes it.
func VersionJSON(gitCommit, idfVersion, firmwareVersion string) []byte {
	b, _ := json.MarshalIndent(map[string]string{
		"git_commit": gitCommit, "idf_version": idfVersion, "firmware_version": firmwareVersion,
	}, "", "  ")
	return b
}

// Members returns a bundle's five members for modelCode in upload order: the
// app image, its ELF, a .map and an sdkconfig (small stand-ins: Validate only
// needs them present) and versionJSON.
func Members(modelCode string, img, elfBytes, versionJSON []byte) []Member {
	return []Member{
		{modelCode + ".bin", img},
		{modelCode + ".elf", elfBytes},
		{modelCode + ".map", []byte("Archive member included to satisfy reference by file (symbol)\n\n.flash.appdesc 0x3c020020 0x100\n")},
		{"sdkconfig", []byte("CONFIG_IDF_TARGET=\"esp32\"\nCONFIG_APP_PROJECT_VER_FROM_CONFIG=y\n")},
		{"version.json", versionJSON},
	}
}

// Zip writes members in order with the given method (zip.Store or zip.Deflate).
func Zip(members []Member, method uint16) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.Name, Method: method})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(m.Data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
