package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Listener wraps ln so that the replies net/http writes by itself, before any handler
// runs (a malformed request line or header, 431, an unsupported transfer encoding),
// carry the error envelope and the security headers like every other error.
func Listener(ln net.Listener) net.Listener { return envelopeListener{ln} }

type envelopeListener struct{ net.Listener }

func (l envelopeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &envelopeConn{Conn: c}, nil
}

// envelopeConn rewrites net/http's own error replies. net/http writes each in a single
// Write with exactly these headers in this order; the responses of handlers have
// their headers sorted (Connection before Content-Type), so they never match.
type envelopeConn struct{ net.Conn }

const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *envelopeConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		if i := bytes.Index(p, []byte(netHTTPErrorHeaders)); i > 0 && !bytes.Contains(p[:i], []byte("\r\n")) {
			if _, err := c.Conn.Write(netHTTPErrorReply(string(p[:i]), string(p[i+len(netHTTPErrorHeaders):]))); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps net/http's sendfile path for downloads.
func (c *envelopeConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(onlyWriter{c.Conn}, r)
}

// CloseWrite lets net/http half-close the connection after an error reply, as it does
// on a bare TCP connection.
func (c *envelopeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// netHTTPErrorReply turns "HTTP/1.1 400 Bad Request: missing required Host header" and
// its text body into the same reply with the envelope.
func netHTTPErrorReply(statusLine, text string) []byte {
	code, _, _ := strings.Cut(strings.TrimPrefix(statusLine, "HTTP/1.1 "), " ")
	status, err := strconv.Atoi(code)
	if err != nil || status < 400 || status > 599 {
		status = http.StatusBadRequest
	}
	msg := strings.TrimSpace(strings.TrimPrefix(text, strconv.Itoa(status)+" "))
	if msg == "" {
		msg = http.StatusText(status)
	}
	id := newRequestID()
	env := newEnvelope(contextWithRequestID(id), status, "", "Malformed request: "+msg)
	body, _ := json.Marshal(env)
	body = append(body, '\n')
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	fmt.Fprintf(&b, "Connection: close\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n")
	fmt.Fprintf(&b, "X-Content-Type-Options: nosniff\r\nContent-Security-Policy: %s\r\n", defaultCSP)
	fmt.Fprintf(&b, "X-Request-ID: %s\r\nContent-Length: %d\r\n\r\n", id, len(body))
	b.Write(body)
	return b.Bytes()
}
