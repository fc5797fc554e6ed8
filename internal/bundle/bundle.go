// Package bundle validates firmware bundle ZIPs (ORIGINAL-SYSTEM.md §3.2): the
// five build artifacts of one firmware version for one device model. It reads
// each member once as a stream, guards against ZIP bombs by counting the bytes
// actually inflated, and checks that the app image, the ELF and version.json
// belong together.
package bundle

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"

	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// Object names under which the artifacts are stored.
const (
	ObjBin         = "firmware.bin"
	ObjELF         = "firmware.elf"
	ObjMap         = "firmware.map"
	ObjSdkconfig   = "sdkconfig"
	ObjVersionJSON = "version.json"
)

// ObjectNames lists the artifacts in storage order.
var ObjectNames = []string{ObjBin, ObjELF, ObjMap, ObjSdkconfig, ObjVersionJSON}

// Mode selects how strict Validate is.
type Mode int

const (
	// Strict is for uploads: all five members, matching ELF and version.json.
	Strict Mode = iota
	// Legacy is for importing what the old service stored: a missing .map,
	// sdkconfig or version.json, a version.json firmware_version that differs
	// from the image, and an ELF whose SHA-256 differs from the image's
	// app_elf_sha256 become warnings.
	Legacy
)

// Limits bound what a bundle may inflate to. Zero fields take the defaults.
type Limits struct {
	MaxMemberBytes int64 // uncompressed bytes per member
	MaxTotalBytes  int64 // uncompressed bytes for the whole bundle
	MaxRatio       int64 // uncompressed/compressed, for members over RatioMinBytes
	RatioMinBytes  int64
}

// DefaultLimits are generous for ESP-IDF builds (apps ≤ 16 MiB, ELFs a few
// tens of MiB) and stop inflation bombs early.
func DefaultLimits() Limits {
	return Limits{MaxMemberBytes: 64 << 20, MaxTotalBytes: 256 << 20, MaxRatio: 200, RatioMinBytes: 1 << 20}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMemberBytes <= 0 {
		l.MaxMemberBytes = d.MaxMemberBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	if l.RatioMinBytes <= 0 {
		l.RatioMinBytes = d.RatioMinBytes
	}
	return l
}

// maxVersionJSON bounds version.json, which is read into memory.
const maxVersionJSON = 1 << 20

// ValidationError is a bundle the service must reject (HTTP 400); Msg is
// meant for the uploader.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func invalid(format string, args ...any) *ValidationError {
	return &ValidationError{Msg: fmt.Sprintf(format, args...)}
}

// Artifact is one validated member of the bundle.
type Artifact struct {
	Name   string // object name, e.g. firmware.bin
	Member string // name inside the ZIP, e.g. esp32c3.bin
	Size   int64
	SHA256 [32]byte
	file   *zip.File
}

// Open streams the member again from the ZIP. The ZIP's reader must still be
// open.
func (a *Artifact) Open() (io.ReadCloser, error) {
	rc, err := a.file.Open()
	if err != nil {
		return nil, fmt.Errorf("open %s in firmware bundle: %w", a.Member, err)
	}
	// The size was checked while validating; refuse to yield more.
	return &sizedReader{rc: rc, left: a.Size}, nil
}

type sizedReader struct {
	rc   io.ReadCloser
	left int64
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		// One more read lets archive/zip verify the CRC at EOF.
		var one [1]byte
		n, err := r.rc.Read(one[:])
		switch {
		case n > 0:
			return 0, errors.New("firmware bundle member grew since validation")
		case err != nil && err != io.EOF:
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF && r.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *sizedReader) Close() error { return r.rc.Close() }

// Bundle is a validated firmware bundle.
type Bundle struct {
	ModelCode string
	Version   string // from the app descriptor; satisfies naming.ValidVersion
	Image     *espimage.Image

	// From version.json; non-string values are kept as JSON text, null as "".
	GitCommit       string
	IDFVersion      string
	FirmwareVersion string

	// Artifacts present in the ZIP, in ObjectNames order. Strict bundles
	// always have all five.
	Artifacts []*Artifact
	// Warnings lists what Legacy mode tolerated.
	Warnings []string
}

// Artifact returns the artifact stored under the object name, or nil.
func (b *Bundle) Artifact(name string) *Artifact {
	for _, a := range b.Artifacts {
		if a.Name == name {
			return a
		}
	}
	return nil
}

const zipPrefix = "Invalid firmware ZIP: "

// Validate checks the bundle ZIP in r (size bytes) for the model modelCode.
// Bad content yields a *ValidationError; read errors from r are returned
// wrapped. The returned artifacts read from r, so keep it open while using them.
func Validate(r io.ReaderAt, size int64, modelCode string, limits Limits, mode Mode) (*Bundle, error) {
	if !naming.ValidModelCode(modelCode) {
		return nil, fmt.Errorf("validate bundle: invalid model code %q", modelCode)
	}
	limits = limits.withDefaults()
	tr := &trackingReaderAt{r: r, size: size}
	v := &validator{tr: tr, limits: limits, mode: mode, code: modelCode}
	b, err := v.run(size)
	if err != nil {
		if ioErr := tr.failure(); ioErr != nil {
			return nil, fmt.Errorf("read firmware bundle: %w", ioErr)
		}
		return nil, err
	}
	return b, nil
}

type validator struct {
	tr     *trackingReaderAt
	limits Limits
	mode   Mode
	code   string
	total  int64 // uncompressed bytes read so far
	b      *Bundle
}

func (v *validator) warn(format string, args ...any) {
	v.b.Warnings = append(v.b.Warnings, fmt.Sprintf(format, args...))
}

func (v *validator) run(size int64) (*Bundle, error) {
	var magic [4]byte
	if n, err := v.tr.ReadAt(magic[:], 0); n < 4 || string(magic[:]) != "PK\x03\x04" {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, invalid("Firmware must be uploaded as a ZIP bundle")
	}
	zr, err := zip.NewReader(v.tr, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // names are checked below
		return nil, invalid("%s%v", zipPrefix, err)
	}
	v.b = &Bundle{ModelCode: v.code}

	members := map[string]string{ // ZIP name → object name
		v.code + ".bin": ObjBin, v.code + ".elf": ObjELF, v.code + ".map": ObjMap,
		"sdkconfig": ObjSdkconfig, "version.json": ObjVersionJSON,
	}
	byObj := map[string]*zip.File{}
	var extra []string
	seen := map[string]bool{}
	for _, f := range zr.File {
		if !safeName(f.Name) {
			return nil, invalid("%sunsafe file name %s", zipPrefix, strconv.Quote(f.Name))
		}
		if seen[f.Name] {
			return nil, invalid("%sduplicate file %s", zipPrefix, f.Name)
		}
		seen[f.Name] = true
		if obj, ok := members[f.Name]; ok {
			byObj[obj] = f
		} else {
			extra = append(extra, f.Name)
		}
	}
	var missing, tolerated []string
	for name, obj := range members {
		if byObj[obj] != nil {
			continue
		}
		if v.mode == Legacy && obj != ObjBin && obj != ObjELF {
			tolerated = append(tolerated, name)
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, invalid("%smissing %s", zipPrefix, strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		return nil, invalid("%sunexpected files: %s", zipPrefix, listNames(extra))
	}
	slices.Sort(tolerated)
	for _, name := range tolerated {
		v.warn("bundle has no %s", name)
	}

	// Declared sizes first: cheap, and most bombs stop here. Actual bytes
	// are counted again while reading.
	var declared uint64
	for _, obj := range ObjectNames {
		f := byObj[obj]
		if f == nil {
			continue
		}
		if err := v.checkHeader(f); err != nil {
			return nil, err
		}
		declared += f.UncompressedSize64
	}
	if declared > uint64(v.limits.MaxTotalBytes) {
		return nil, invalid("%scontents too large (%d bytes uncompressed, limit %d)", zipPrefix, declared, v.limits.MaxTotalBytes)
	}

	// version.json first, matching the original's validation order.
	if f := byObj[ObjVersionJSON]; f != nil {
		if err := v.readVersionJSON(f); err != nil {
			return nil, err
		}
	}
	if err := v.readImage(byObj[ObjBin]); err != nil {
		return nil, err
	}
	elfSum, err := v.readELF(byObj[ObjELF])
	if err != nil {
		return nil, err
	}
	for _, obj := range []string{ObjMap, ObjSdkconfig} {
		if f := byObj[obj]; f != nil {
			if err := v.readPlain(f, obj); err != nil {
				return nil, err
			}
		}
	}
	// Keep storage order.
	slices.SortFunc(v.b.Artifacts, func(a, b *Artifact) int {
		return slices.Index(ObjectNames, a.Name) - slices.Index(ObjectNames, b.Name)
	})

	im := v.b.Image
	if elfSum != im.AppELFSHA256 {
		msg := fmt.Sprintf("%s.elf does not belong to %s.bin (ELF SHA-256 %x, app_elf_sha256 in the image %x)",
			v.code, v.code, elfSum, im.AppELFSHA256)
		if v.mode != Legacy {
			return nil, invalid("%s%s", zipPrefix, msg)
		}
		v.warn("%s", msg)
	}
	fv := v.b.FirmwareVersion
	// A placeholder ("unknown", empty, null) is a mismatch too: version.json must name the
	// version the image carries. Legacy imports, which may lack version.json, only warn.
	if byObj[ObjVersionJSON] != nil && fv != im.Version {
		msg := fmt.Sprintf("version.json firmware_version %s does not match the app image version %s",
			strconv.Quote(fv), strconv.Quote(im.Version))
		if v.mode != Legacy {
			return nil, invalid("%s%s", zipPrefix, msg)
		}
		v.warn("%s", msg)
	}
	return v.b, nil
}

// checkHeader rejects members whose declared properties are already fatal.
func (v *validator) checkHeader(f *zip.File) error {
	switch {
	case f.Flags&0x1 != 0:
		return invalid("%s%s is encrypted", zipPrefix, f.Name)
	case f.Method != zip.Store && f.Method != zip.Deflate:
		return invalid("%s%s uses unsupported compression method %d", zipPrefix, f.Name, f.Method)
	case f.UncompressedSize64 >= 1<<32 || f.UncompressedSize64 > uint64(v.limits.MaxMemberBytes):
		return invalid("%s%s is too large (%d bytes uncompressed, limit %d)", zipPrefix, f.Name, f.UncompressedSize64, v.limits.MaxMemberBytes)
	case f.UncompressedSize64 > uint64(v.limits.RatioMinBytes) &&
		f.UncompressedSize64/uint64(v.limits.MaxRatio) > f.CompressedSize64:
		return invalid("%s%s has a suspicious compression ratio (%d bytes from %d)", zipPrefix, f.Name, f.UncompressedSize64, f.CompressedSize64)
	}
	return nil
}

// open returns a reader of f's inflated bytes that enforces the limits and
// hashes what it yields.
func (v *validator) open(f *zip.File, obj string) (*memberReader, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, v.readFailure(f, err)
	}
	a := &Artifact{Name: obj, Member: f.Name, file: f}
	return &memberReader{v: v, f: f, rc: rc, h: sha256.New(), a: a}, nil
}

// finish drains the member (which makes archive/zip check its CRC) and
// records the artifact.
func (v *validator) finish(m *memberReader) error {
	defer m.rc.Close()
	if _, err := io.Copy(io.Discard, m); err != nil {
		return v.readFailure(m.f, err)
	}
	m.a.Size = m.n
	m.h.Sum(m.a.SHA256[:0])
	v.b.Artifacts = append(v.b.Artifacts, m.a)
	return nil
}

// readFailure turns an error met while inflating into the error to report.
func (v *validator) readFailure(f *zip.File, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) || v.tr.failure() != nil {
		return err // Validate reports the I/O error
	}
	return invalid("%s%s: %v", zipPrefix, f.Name, err)
}

func (v *validator) readPlain(f *zip.File, obj string) error {
	m, err := v.open(f, obj)
	if err != nil {
		return err
	}
	return v.finish(m)
}

func (v *validator) readImage(f *zip.File) error {
	m, err := v.open(f, ObjBin)
	if err != nil {
		return err
	}
	im, err := espimage.ParseReader(m, int64(f.UncompressedSize64))
	if err != nil {
		m.rc.Close()
		var ie *espimage.Error
		if errors.As(err, &ie) {
			return invalid("Invalid firmware: %s", ie.Msg)
		}
		return v.readFailure(f, err)
	}
	if !naming.ValidVersion(im.Version) {
		m.rc.Close()
		return invalid("Invalid firmware: version %s is not allowed (use 1 to 32 characters of A-Z, a-z, 0-9, '.', '_', '+', '-')", strconv.Quote(im.Version))
	}
	v.b.Image, v.b.Version = im, im.Version
	return v.finish(m)
}

func (v *validator) readELF(f *zip.File) ([32]byte, error) {
	var sum [32]byte
	m, err := v.open(f, ObjELF)
	if err != nil {
		return sum, err
	}
	var hdr [52]byte // ELF32 header
	n, err := io.ReadFull(m, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		m.rc.Close()
		return sum, v.readFailure(f, err)
	}
	name := f.Name
	im := v.b.Image
	switch {
	case n < len(hdr) || string(hdr[:4]) != elf.ELFMAG:
		err = invalid("%s%s is not an ELF file", zipPrefix, name)
	case elf.Class(hdr[elf.EI_CLASS]) != elf.ELFCLASS32 || elf.Data(hdr[elf.EI_DATA]) != elf.ELFDATA2LSB:
		err = invalid("%s%s is not a 32-bit little-endian ELF file as ESP-IDF builds", zipPrefix, name)
	case elf.Type(binary.LittleEndian.Uint16(hdr[16:])) != elf.ET_EXEC:
		err = invalid("%s%s is not an executable (ELF type %v)", zipPrefix, name, elf.Type(binary.LittleEndian.Uint16(hdr[16:])))
	default:
		if mach := elf.Machine(binary.LittleEndian.Uint16(hdr[18:])); mach != im.Arch.ELFMachine() {
			err = invalid("%s%s is built for %v, but %s.bin is an %s image (%s)", zipPrefix, name, mach, v.code, im.Chip, im.Arch)
		}
	}
	if err != nil {
		m.rc.Close()
		return sum, err
	}
	if err := v.finish(m); err != nil {
		return sum, err
	}
	return m.a.SHA256, nil
}

func (v *validator) readVersionJSON(f *zip.File) error {
	if f.UncompressedSize64 > maxVersionJSON {
		return invalid("%sversion.json is too large (%d bytes, limit %d)", zipPrefix, f.UncompressedSize64, maxVersionJSON)
	}
	m, err := v.open(f, ObjVersionJSON)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(m, maxVersionJSON+1))
	if err != nil {
		m.rc.Close()
		return v.readFailure(f, err)
	}
	if err := v.finish(m); err != nil { // no more bytes: the size was checked
		return err
	}
	text, err := decodeBOM(raw)
	if err != nil {
		return invalid("%sversion.json is not valid JSON: %v", zipPrefix, err)
	}
	var probe json.RawMessage
	if err := json.Unmarshal(text, &probe); err != nil {
		return invalid("%sversion.json is not valid JSON: %v", zipPrefix, err)
	}
	if t := bytes.TrimLeft(text, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return invalid("%sversion.json must contain a JSON object", zipPrefix)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(text, &fields); err != nil {
		return invalid("%sversion.json is not valid JSON: %v", zipPrefix, err)
	}
	var absent []string
	for _, k := range []string{"firmware_version", "git_commit", "idf_version"} {
		if _, ok := fields[k]; !ok {
			absent = append(absent, k)
		}
	}
	if len(absent) > 0 {
		return invalid("%sversion.json missing fields: %s", zipPrefix, strings.Join(absent, ", "))
	}
	v.b.GitCommit = jsonText(fields["git_commit"])
	v.b.IDFVersion = jsonText(fields["idf_version"])
	v.b.FirmwareVersion = jsonText(fields["firmware_version"])
	return nil
}

// jsonText is a string value as such, null as "", anything else as JSON.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if string(raw) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

// decodeBOM returns UTF-8 text, honouring a UTF-8/16/32 byte order mark as
// Python's json.loads does.
func decodeBOM(b []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		return b[3:], nil
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE, 0, 0}):
		return utf32(b[4:], binary.LittleEndian)
	case bytes.HasPrefix(b, []byte{0, 0, 0xFE, 0xFF}):
		return utf32(b[4:], binary.BigEndian)
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return utf16s(b[2:], binary.LittleEndian)
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return utf16s(b[2:], binary.BigEndian)
	}
	return b, nil
}

func utf16s(b []byte, bo binary.ByteOrder) ([]byte, error) {
	if len(b)%2 != 0 {
		return nil, errors.New("truncated UTF-16 text")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = bo.Uint16(b[2*i:])
	}
	return []byte(string(utf16.Decode(u))), nil
}

func utf32(b []byte, bo binary.ByteOrder) ([]byte, error) {
	if len(b)%4 != 0 {
		return nil, errors.New("truncated UTF-32 text")
	}
	var sb strings.Builder
	for i := 0; i < len(b); i += 4 {
		r := rune(bo.Uint32(b[i:]))
		if r > unicode.MaxRune || r < 0 {
			return nil, errors.New("invalid UTF-32 text")
		}
		sb.WriteRune(r)
	}
	return []byte(sb.String()), nil
}

// safeName rejects names that could escape a directory if anyone ever
// extracted them: absolute, "..", backslashes, drive letters, control bytes.
func safeName(name string) bool {
	if strings.ContainsAny(name, "\\:") {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7F {
			return false
		}
	}
	p := strings.TrimSuffix(name, "/") // directory entries are merely unexpected
	return fs.ValidPath(p) && p != "."
}

// listNames joins sorted names, quoting odd ones and capping the list so a ZIP
// with thousands of entries cannot produce a huge message.
func listNames(names []string) string {
	slices.Sort(names)
	const show = 10
	var parts []string
	for i, n := range names {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-show))
			break
		}
		if strings.ContainsAny(n, ", \"") || !strconv.IsPrint(firstNonPrint(n)) {
			n = strconv.Quote(n)
		}
		parts = append(parts, n)
	}
	return strings.Join(parts, ", ")
}

func firstNonPrint(s string) rune {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return r
		}
	}
	return 'a'
}

// memberReader counts inflated bytes against the limits as they are produced,
// whatever the headers claim.
type memberReader struct {
	v  *validator
	f  *zip.File
	rc io.ReadCloser
	h  hash.Hash
	a  *Artifact
	n  int64
}

func (m *memberReader) Read(p []byte) (int, error) {
	n, err := m.rc.Read(p)
	m.n += int64(n)
	m.v.total += int64(n)
	m.h.Write(p[:n])
	l := m.v.limits
	switch {
	case m.n > l.MaxMemberBytes:
		return n, invalid("%s%s is too large (over %d bytes uncompressed)", zipPrefix, m.f.Name, l.MaxMemberBytes)
	case m.v.total > l.MaxTotalBytes:
		return n, invalid("%scontents too large (over %d bytes uncompressed)", zipPrefix, l.MaxTotalBytes)
	case m.n > l.RatioMinBytes && m.n/l.MaxRatio > int64(m.f.CompressedSize64):
		return n, invalid("%s%s has a suspicious compression ratio (over %d bytes from %d)", zipPrefix, m.f.Name, m.n, m.f.CompressedSize64)
	}
	return n, err
}

var errBadOffset = errors.New("offset outside the archive")

// trackingReaderAt remembers the first real read error, so that Validate can
// tell an I/O failure from a malformed archive.
type trackingReaderAt struct {
	r    io.ReaderAt
	size int64
	mu   sync.Mutex
	err  error
}

func (t *trackingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	// Offsets come from the archive itself; out-of-range ones mean a
	// malformed ZIP, not a failing disk.
	if off < 0 {
		return 0, errBadOffset
	}
	if off >= t.size {
		return 0, io.EOF
	}
	n, err := t.r.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	return n, err
}

func (t *trackingReaderAt) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}
