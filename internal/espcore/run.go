package espcore

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/iotsupport/iotsupport/internal/elfsym"
)

// DecodeFiles is the CLI entry point: decode dumpPath with the optional app
// ELF at elfPath and print text or JSON to w. The exit code is non-zero only
// when nothing could be decoded.
func DecodeFiles(dumpPath, elfPath string, asJSON bool, w io.Writer) (int, error) {
	dump, err := readLimited(dumpPath)
	if err != nil {
		return 2, err
	}
	var ix *elfsym.Index
	var elfErr error
	if elfPath != "" {
		f, err := os.Open(elfPath)
		if err != nil {
			elfErr = err
		} else {
			ix, elfErr = elfsym.New(f)
			f.Close()
		}
	}
	rep, err := Decode(dump, ix, Options{})
	if err != nil {
		return 1, err
	}
	if elfErr != nil {
		// Without the ELF the dump still yields registers and raw PCs.
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("app ELF not used: %v", elfErr))
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return 0, enc.Encode(rep)
	}
	_, err = io.WriteString(w, rep.Text())
	return 0, err
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxInput)
	}
	return b, nil
}
