package firmware

import (
	"fmt"
	"io"
	"os"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// Spool copies a request body into a temporary file, refusing more than limit bytes
// while reading (never after buffering). The caller removes the file with cleanup,
// which is safe to call on every path.
func Spool(dir string, r io.Reader, limit int64) (f *os.File, size int64, cleanup func(), err error) {
	f, err = os.CreateTemp(dir, "iotsupport-bundle-*.zip")
	if err != nil {
		return nil, 0, func() {}, fmt.Errorf("create temp file: %w", err)
	}
	cleanup = func() {
		f.Close()
		os.Remove(f.Name())
	}
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if err != nil {
		cleanup()
		return nil, 0, func() {}, &apperr.Error{Kind: apperr.Validation, Msg: "Could not read the request body", Err: err}
	}
	if n > limit {
		cleanup()
		return nil, 0, func() {}, apperr.TooLargef("Firmware bundle exceeds the limit of %d bytes", limit)
	}
	if n == 0 {
		cleanup()
		return nil, 0, func() {}, apperr.Validationf("No firmware content provided")
	}
	return f, n, cleanup, nil
}
