package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// fileServerName names the baseline a user would otherwise run: the stored files served
// by a plain static file server.
const fileServerName = "the same file over loopback HTTP from Go's http.FileServer"

// inProcessName names the older baseline: the store read in this process, no HTTP.
const inProcessName = "the stored file read in-process (no HTTP)"

// fileServer serves the local store's directory over loopback HTTP with Go's
// http.FileServer (sendfile, Range, no auth, no database) and returns the URL of key.
// It needs the embedded default (local storage); stop closes it.
func (r *runner) fileServer(key string, size int64) (url string, stop func(), err error) {
	l, ok := r.store.(*blob.Local)
	if !ok {
		return "", nil, fmt.Errorf("not a local store")
	}
	fi, err := os.Stat(filepath.Join(l.Root(), filepath.FromSlash(key)))
	if err != nil || fi.Size() != size {
		return "", nil, fmt.Errorf("stored file of %s not found with %d bytes: %v", key, size, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(l.Root()))}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/" + key, func() { _ = hs.Close() }, nil
}

// plainGet is a GET without credentials that checks the status and byte count.
func (r *runner) plainGet(ctx context.Context, url string, hdr http.Header, status int, want int64) (int64, error) {
	return r.get(ctx, url, url, nil, hdr, status, want)
}

// withFileServer measures srv against the file-server baseline (the ratio's) and the
// in-process one (reported as another baseline) in the same rounds. Without a local
// store the in-process baseline alone is used, as before.
func (r *runner) withFileServer(ctx context.Context, name string, conc int, key string, size int64, srv, inProc op,
	fsOp func(url string) op) (Result, error) {
	res := Result{Scenario: name, Concurrency: conc}
	url, stop, err := r.fileServer(key, size)
	if err != nil {
		res.Server, res.Baseline, res.PeakRSS = r.compare(ctx, name, conc, srv, inProc)
		if inProc != nil {
			res.Note = "baseline: " + inProcessName + " (no file-server baseline: " + err.Error() + ")"
		}
		return res, nil
	}
	defer stop()
	st, bs, peak := r.compareAll(ctx, name, conc, srv, fsOp(url), inProc)
	res.Server, res.PeakRSS = st, peak
	res.Baseline = &bs[0]
	res.Other = []OtherBaseline{{Name: inProcessName, Baseline: bs[1]}}
	res.Note = "baseline: " + fileServerName
	return res, nil
}
