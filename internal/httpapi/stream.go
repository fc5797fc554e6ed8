package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// copyBufs are the buffers downloads stream through: memory per download is one
// buffer, whatever the object's size.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

type onlyWriter struct{ io.Writer }

// Download describes an object to stream to the client.
type Download struct {
	Filename    string
	Size        int64
	ETag        string // strong validator, e.g. the content's SHA-256 hex; "" for none
	ContentType string
	Header      http.Header // extra response headers
	// Open fetches the object, or only the requested range, from storage.
	Open func(ctx context.Context, rng *blob.Range) (io.ReadCloser, error)
}

// parseRange understands one "bytes=" range (first-last, first-, -suffix). ok=false
// means serve the whole object (absent, malformed or multiple ranges); satisfiable=false
// means answer 416.
func parseRange(h string, size int64) (rng blob.Range, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if h == "" || !found || strings.Contains(spec, ",") {
		return blob.Range{}, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return blob.Range{}, false, true
	}
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return blob.Range{}, false, true
		}
		if n == 0 || size == 0 {
			return blob.Range{}, true, false
		}
		if n > size {
			n = size
		}
		return blob.Range{Offset: size - n, Length: n}, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return blob.Range{}, false, true
	}
	if a >= size {
		return blob.Range{}, true, false
	}
	end := size - 1
	if last != "" {
		b, err := strconv.ParseInt(last, 10, 64)
		if err != nil || b < a {
			return blob.Range{}, false, true
		}
		if b < end {
			end = b
		}
	}
	return blob.Range{Offset: a, Length: end - a + 1}, true, true
}

func etagMatches(header, etag string) bool {
	if etag == "" || header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || t == `"`+etag+`"` {
			return true
		}
	}
	return false
}

// serveDownload streams d with Content-Length, ETag/If-None-Match (304) and single
// Range requests (206, only that range is read from storage).
func serveDownload(w http.ResponseWriter, r *http.Request, d Download) {
	h := w.Header()
	for k, vs := range d.Header {
		h[k] = vs
	}
	if d.ContentType == "" {
		d.ContentType = "application/octet-stream"
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "no-cache")
	if d.ETag != "" {
		h.Set("ETag", `"`+d.ETag+`"`)
	}
	if d.Filename != "" {
		h.Set("Content-Disposition", "attachment; filename="+d.Filename)
	}
	if etagMatches(r.Header.Get("If-None-Match"), d.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	rng, partial, satisfiable := parseRange(r.Header.Get("Range"), d.Size)
	// If-Range with a different validator means the client's copy is stale: send it all.
	if ir := r.Header.Get("If-Range"); partial && ir != "" && ir != `"`+d.ETag+`"` {
		partial, satisfiable = false, true
	}
	if !satisfiable {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", d.Size))
		writeEnvelope(w, newEnvelope(r.Context(), http.StatusRequestedRangeNotSatisfiable, "RANGE_NOT_SATISFIABLE",
			fmt.Sprintf("Range %q is outside the %d-byte object", r.Header.Get("Range"), d.Size)))
		return
	}
	var brng *blob.Range
	length := d.Size
	if partial {
		brng, length = &rng, rng.Length
	}
	if r.Method == http.MethodHead {
		// Headers only: nothing is fetched from storage.
		h.Set("Content-Type", d.ContentType)
		h.Set("Content-Length", strconv.FormatInt(length, 10))
		if partial {
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.Offset, rng.Offset+rng.Length-1, d.Size))
			w.WriteHeader(http.StatusPartialContent)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	rc, err := d.Open(r.Context(), brng)
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer rc.Close()
	h.Set("Content-Type", d.ContentType)
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.Offset, rng.Offset+rng.Length-1, d.Size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if err := copyBody(w, rc, length); err != nil && !errors.Is(err, context.Canceled) {
		loggerFrom(r.Context()).Warn("download interrupted", "file", d.Filename, "error", err)
	}
}

// copyBody sends length bytes of rc. A local file (the local store, the firmware
// cache) goes through the ResponseWriter's ReadFrom, which net/http turns into
// sendfile: no copy through user space. Anything else (an S3 response body) streams
// through a pooled buffer.
func copyBody(w http.ResponseWriter, rc io.Reader, length int64) error {
	f, ok := rc.(*os.File)
	if fr, isFiler := rc.(blob.Filer); !ok && isFiler {
		f, ok = fr.File(), true
	}
	if ok {
		_, err := io.Copy(w, io.LimitReader(f, length))
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// onlyWriter hides ReadFrom so the pooled buffer is used whatever the writer is.
	_, err := io.CopyBuffer(onlyWriter{w}, io.LimitReader(rc, length), *bp)
	return err
}
