// Package apitest runs the whole service in-process over httptest for API tests, on
// the configurations of testenv, and checks every error body has the envelope shape.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// Server is a running in-process service.
type Server struct {
	T   testing.TB
	Env *testenv.Env
	App *app.App
	URL string
	// Header is added to every request (e.g. Authorization); an admin token by default.
	Header http.Header
	// Tokens holds a token secret per role.
	Tokens map[string]string
}

// starts numbers servers so replicas over one database get distinct token names.
var starts atomic.Int64

// Start builds the app over env with settings overridden by kv pairs (NAME, value, …).
func Start(t testing.TB, env *testenv.Env, kv ...string) *Server {
	t.Helper()
	vals := map[string]string{"DATABASE_URL": env.DatabaseURL, "LOG_LEVEL": "warn"}
	for i := 0; i+1 < len(kv); i += 2 {
		vals[kv[i]] = kv[i+1]
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := vals[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := app.New(context.Background(), cfg, log, env.DB, env.Store)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.HTTP)
	t.Cleanup(ts.Close)
	s := &Server{T: t, Env: env, App: a, URL: ts.URL, Header: http.Header{}, Tokens: map[string]string{}}
	if cfg.AuthMode != "insecure-dev" {
		for _, role := range []string{"viewer", "editor", "admin", "pipeline"} {
			_, secret, err := a.Tokens.Create(context.Background(), "test-"+role, role)
			if apperr.KindOf(err) == apperr.Exists { // a second replica over the same database
				_, secret, err = a.Tokens.Create(context.Background(), fmt.Sprintf("test-%s-%d", role, starts.Add(1)), role)
			}
			if err != nil {
				t.Fatal(err)
			}
			s.Tokens[role] = secret
		}
		s.Header.Set("Authorization", "Bearer "+s.Tokens["admin"])
	}
	return s
}

// As returns a copy of the server client that authenticates with the given Authorization value ("" for none).
func (s *Server) As(authorization string) *Server {
	c := *s
	c.Header = http.Header{}
	if authorization != "" {
		c.Header.Set("Authorization", authorization)
	}
	return &c
}

// Role returns a client using the test token of role (viewer, editor, admin, pipeline).
func (s *Server) Role(role string) *Server { return s.As("Bearer " + s.Tokens[role]) }

// Basic returns a client authenticating as a device.
func (s *Server) Basic(key, secret string) *Server {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(key, secret)
	return s.As(req.Header.Get("Authorization"))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Response is a finished request.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v or fails the test.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the body as an object.
func (r *Response) Map(t testing.TB) map[string]any {
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// Do sends a request; body may be nil, []byte, string, or any value encoded as JSON.
func (s *Server) Do(method, path string, body any, hdr ...string) *Response {
	s.T.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
		ct = "application/octet-stream"
	case string:
		rd = strings.NewReader(b)
		ct = "application/json"
	case io.Reader:
		rd = b
		ct = "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.T.Fatal(err)
		}
		rd = bytes.NewReader(j)
		ct = "application/json"
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.T.Fatal(err)
	}
	for k, v := range s.Header {
		req.Header[k] = v
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.T.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if resp.StatusCode >= 400 && method != http.MethodHead {
		CheckEnvelope(s.T, r)
	}
	return r
}

// Expect sends a request and fails unless the status matches.
func (s *Server) Expect(status int, method, path string, body any, hdr ...string) *Response {
	s.T.Helper()
	r := s.Do(method, path, body, hdr...)
	if r.Status != status {
		s.T.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.Status, status, r.Body)
	}
	return r
}

// CheckEnvelope fails unless an error body is exactly the documented envelope.
func CheckEnvelope(t testing.TB, r *Response) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("error body is not a JSON object (status %d): %s", r.Status, r.Body)
	}
	for k := range m {
		switch k {
		case "error", "details", "code", "correlationId":
		default:
			t.Fatalf("error body has unexpected field %q: %s", k, r.Body)
		}
	}
	var env struct {
		Error   string `json:"error"`
		Details struct {
			Message string `json:"message"`
		} `json:"details"`
		Code          string `json:"code"`
		CorrelationID string `json:"correlationId"`
	}
	_ = json.Unmarshal(r.Body, &env)
	if env.Error == "" || env.Details.Message == "" || env.Code == "" || env.CorrelationID == "" {
		t.Fatalf("error body misses envelope fields: %s", r.Body)
	}
	if got := r.Header.Get("X-Request-ID"); got != env.CorrelationID {
		t.Fatalf("correlationId %q != X-Request-ID %q", env.CorrelationID, got)
	}
}
