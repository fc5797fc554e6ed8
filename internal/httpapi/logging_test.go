package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every line logged for a request carries its id: the access line and a handler's own.
func TestRequestLogLinesCarryTheRequestID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	m := newHTTPMetrics(prometheus.NewRegistry())
	h := withRequestID(log)(m.observe(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		loggerFrom(r.Context()).Warn("from the handler")
		w.WriteHeader(http.StatusTeapot)
	})))
	for _, sent := range []string{"client-chosen-id", ""} {
		buf.Reset()
		req := httptest.NewRequest("GET", "/x", nil)
		if sent != "" {
			req.Header.Set("X-Request-ID", sent)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		id := rec.Header().Get("X-Request-ID")
		if id == "" || sent != "" && id != sent {
			t.Fatalf("X-Request-ID %q for a request that sent %q", id, sent)
		}
		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if e["request_id"] != id {
				t.Errorf("line %q: request_id %v, want %q", line, e["request_id"], id)
			}
			msgs = append(msgs, e["msg"].(string))
		}
		if strings.Join(msgs, ",") != "from the handler,request" {
			t.Errorf("logged %v, want the handler's line and the access line", msgs)
		}
	}
}
