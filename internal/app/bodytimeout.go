package app

import (
	"io"
	"net/http"
	"time"
)

// bodyIdleTimeout bounds how long one read of a request body may wait for bytes
// (REQUEST_BODY_TIMEOUT): a client that stops sending mid-upload (slow loris) gets a read
// error, so the upload fails and rolls back instead of holding a connection, a temporary
// file and a database transaction forever. The deadline is armed only while a Read blocks,
// so slow handler work after the body was read is never cut off, and a large upload on a
// slow but steady link is fine.
func bodyIdleTimeout(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// net/http itself reads what a handler left of the body (up to 256 KiB, to keep
		// the connection) before sending the response, with no deadline of its own: a
		// 401, 404 or any handler that never reads would let a client trickling bytes
		// hold the connection forever. Those reads get REQUEST_BODY_TIMEOUT in all,
		// before the handler (a large response flushed unread) and after it; a handler
		// reading the body re-arms the deadline per read (idleBody).
		_ = rc.SetReadDeadline(time.Now().Add(d))
		// A shallow copy: the server keeps seeing its own body type in the original
		// request, which it inspects after the handler to decide whether the rest of
		// an unread body can be discarded or the connection must close.
		r2 := r.WithContext(r.Context())
		r2.Body = &idleBody{ReadCloser: r.Body, rc: rc, d: d}
		h.ServeHTTP(w, r2)
		_ = rc.SetReadDeadline(time.Now().Add(d))
	})
}

type idleBody struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	armed := b.rc.SetReadDeadline(time.Now().Add(b.d)) == nil
	n, err := b.ReadCloser.Read(p)
	switch {
	case !armed:
	case err != nil && err != io.EOF:
		// Leave the connection unreadable: net/http would otherwise wait for the rest
		// of the stalled body (to discard it) before sending the error response.
		_ = b.rc.SetReadDeadline(time.Now())
	default:
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
