package httpapi_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestAuditSurvivesClientDisconnect: clients that send a complete write and hang up at once
// still leave one audit row per request, and every model created has its 201 row.
func TestAuditSurvivesClientDisconnect(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		const n = 60
		host := strings.TrimPrefix(s.URL, "http://")
		for i := 0; i < n; i++ {
			body := fmt.Sprintf(`{"code":"gone%d","name":"Gone"}`, i)
			req := fmt.Sprintf("POST /api/device-models HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, s.Tokens["editor"], len(body), body)
			c, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		// The request counter moves once a request is finished, audit write included.
		deadline := time.Now().Add(2 * time.Minute)
		for finished(t, s, "POST", "/api/device-models") < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %v of %d requests finished", finished(t, s, "POST", "/api/device-models"), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		models := testenv.Count(t, env.DB, "device_models")
		var rows, created int
		if err := env.DB.QueryRow(`SELECT COUNT(*), COUNT(CASE WHEN status = 201 THEN 1 END) FROM audit_log
			WHERE method = 'POST' AND route = '/api/device-models' AND actor = 'test-editor'`).Scan(&rows, &created); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d requests: %d models, %d audit rows (%d with 201)", n, models, rows, created)
		if rows != n || created != models {
			t.Fatalf("%d requests made %d models but %d audit rows, %d of them 201", n, models, rows, created)
		}
	})
}

// finished is how many requests of method and route the server has answered.
func finished(t *testing.T, s *apitest.Server, method, route string) float64 {
	var v float64
	for _, m := range gather(t, s, "iotsupport_http_requests_total") {
		if m.labels["method"] == method && m.labels["route"] == route {
			v += m.value
		}
	}
	return v
}
