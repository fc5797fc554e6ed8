package bench

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/espimage"
)

// The images and bundles the benchmark uploads are built from the shared test
// ELFs by espimage's and bundle's builders (the same ones the tests use, through
// espimagetest and bundletest); the test packages stay out of the binary.

// testELF returns the path of a shared test app ELF.
func testELF(testdata, name string) string {
	return filepath.Join(testdata, "esp-coredump", name, "app.elf")
}

// readCoredump returns a test case's core dump as the device sends it over
// HTTP: the base64 text printed over UART.
func readCoredump(testdata, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(testdata, "esp-coredump", name, "coredump.b64"))
}

// fwBundle is a firmware bundle ready to upload.
type fwBundle struct {
	members []bundle.Member // in bundle.ObjectNames order
	zip     []byte
	image   *espimage.Image
}

// buildBundle builds a bundle for modelCode whose app image, made from elfBytes,
// is exactly imageBytes long; gitCommit goes into version.json.
func buildBundle(modelCode string, elfBytes []byte, imageBytes int, gitCommit string) (*fwBundle, error) {
	img, err := espimage.BuildFromELF(elfBytes, espimage.BuildOptions{PadTo: imageBytes})
	if err != nil {
		return nil, err
	}
	im, err := espimage.Parse(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return nil, err
	}
	members := bundle.Members(modelCode, img, elfBytes, bundle.VersionJSON(gitCommit, im.IDFVersion, im.Version))
	z, err := bundle.Zip(members, zip.Store) // the padding is incompressible
	if err != nil {
		return nil, err
	}
	return &fwBundle{members: members, zip: z, image: im}, nil
}
