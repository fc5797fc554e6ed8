package publicurl

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"iot.example.com": true, "localhost:3101": true, "127.0.0.1:8080": true, "[::1]:3101": true, "[2001:db8::1]": true,
		"iot_backend:3101": true, "IoT.Example.COM": true,
		"": false, "$(id)": false, "a'b": false, "`id`": false, "a b": false, "host:": false, "host:0": false, "host:65536": false,
		"host:80:80": false, "[::1": false, "[127.0.0.1]": false, "[fe80::1%eth0]": false, "[::1]x": false, "-a.example": false,
		"a..b": false, "a.example/evil": false, "a\"b": false, "héllo.example": false,
	} {
		if got := ValidHost(h); got != want {
			t.Errorf("ValidHost(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestBaseURL(t *testing.T) {
	cases := []struct {
		name  string
		r     Resolver
		host  string
		https bool
		hdr   []string
		want  string // "" means a validation error
	}{
		{"request host", Resolver{}, "iot.example:3101", false, nil, "http://iot.example:3101"},
		{"TLS", Resolver{}, "iot.example", true, nil, "https://iot.example"},
		{"host is lowercased", Resolver{}, "IoT.Example", false, nil, "http://iot.example"},
		{"forwarded ignored unless trusted", Resolver{}, "iot.example", false, []string{"X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "https"}, "http://iot.example"},
		{"forwarded from a trusted proxy: its own (last) value", Resolver{TrustProxy: true}, "backend:3101", false,
			[]string{"X-Forwarded-Host", "spoofed.example, iot.example", "X-Forwarded-Proto", "http, HTTPS"}, "https://iot.example"},
		{"unknown forwarded proto ignored", Resolver{TrustProxy: true}, "iot.example", false, []string{"X-Forwarded-Proto", "javascript"}, "http://iot.example"},
		{"bad host", Resolver{}, "$(id)", false, nil, ""},
		{"bad trusted forwarded host", Resolver{TrustProxy: true}, "iot.example", false, []string{"X-Forwarded-Host", "a'b"}, ""},
		{"configured wins", Resolver{Configured: "https://iot.example.com/base", TrustProxy: true}, "$(id)", false,
			[]string{"X-Forwarded-Host", "evil.example"}, "https://iot.example.com/base"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/api/pipeline/upload.sh", nil)
		r.Host = tc.host
		if tc.https {
			r.TLS = &tls.ConnectionState{}
		}
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			r.Header.Set(tc.hdr[i], tc.hdr[i+1])
		}
		got, err := tc.r.BaseURL(r)
		if tc.want == "" {
			if apperr.KindOf(err) != apperr.Validation {
				t.Errorf("%s: got %q, %v; want a validation error", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
