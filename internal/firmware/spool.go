package firmware

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// Spool copies a request body into a temporary file, refusing more than limit bytes
// while reading (never after buffering). The caller removes the file with cleanup,
// which is safe to call on every path.
func Spool(dir string, r io.Reader, limit int64) (f *os.File, size int64, cleanup func(), err error) {
	f, err = os.CreateTemp(dir, SpoolPrefix+"*.zip")
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

// SpoolPrefix starts the name of every spool file, so that start-up and fsck recognise
// ours among whatever else shares TEMP_DIR.
const SpoolPrefix = "iotsupport-bundle-"

// StaleSpools lists the spool files in dir ("" is the system temp directory) not
// written for longer than age: uploads cut off by a crash. Younger ones may be another
// replica's uploads in flight.
func StaleSpools(dir string, age time.Duration, now time.Time) ([]string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spool directory: %w", err)
	}
	var stale []string
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), SpoolPrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if now.Sub(fi.ModTime()) > age {
			stale = append(stale, filepath.Join(dir, e.Name()))
		}
	}
	return stale, nil
}
