package bench

import (
	"os"
	"path/filepath"
)

// The images and bundles the benchmark uploads are built by espimagetest and
// bundletest (the same builders the tests use) from the shared test ELFs.

// testELF returns the path of a shared test app ELF.
func testELF(testdata, name string) string {
	return filepath.Join(testdata, "esp-coredump", name, "app.elf")
}

// readCoredump returns a test case's core dump as the device sends it over
// HTTP: the base64 text printed over UART.
func readCoredump(testdata, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(testdata, "esp-coredump", name, "coredump.b64"))
}
