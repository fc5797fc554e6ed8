// Package publicurl works out the URL clients reach this service at, for anything the
// service hands out with its own address in it (the CI upload scripts). The configured
// PUBLIC_BASE_URL wins; otherwise the request's Host is used, and X-Forwarded-Proto and
// X-Forwarded-Host only when the proxy in front is trusted. A host that is not a plain
// host[:port] is refused: it ends up inside scripts that CI jobs run.
package publicurl

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// Resolver derives the base URL (scheme://host[:port][/prefix], no trailing slash).
type Resolver struct {
	// Configured is PUBLIC_BASE_URL ("" derives the URL from each request).
	Configured string
	// TrustProxy honours X-Forwarded-Proto/-Host (TRUST_PROXY_HEADERS).
	TrustProxy bool
}

// BaseURL is the URL the client of r reaches this service at. It fails with a
// validation error when it has to be derived from a host header that is not host[:port].
func (c Resolver) BaseURL(r *http.Request) (string, error) {
	if c.Configured != "" {
		return c.Configured, nil
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if c.TrustProxy {
		// One trusted proxy: the value it added is the last one.
		if p := strings.ToLower(lastValue(r.Header.Get("X-Forwarded-Proto"))); p == "http" || p == "https" {
			scheme = p
		}
		if h := lastValue(r.Header.Get("X-Forwarded-Host")); h != "" {
			host = h
		}
	}
	if !ValidHost(host) {
		return "", apperr.Validationf("The request's host is not a valid host[:port], so this service's URL is unknown; set PUBLIC_BASE_URL")
	}
	return scheme + "://" + strings.ToLower(host), nil
}

func lastValue(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

// ValidHost reports whether h is a DNS name, an IPv4 address or a bracketed IPv6
// address, with an optional port.
func ValidHost(h string) bool {
	name, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		rest := h[end+1:]
		if rest == "" {
			return true
		}
		if rest[0] != ':' {
			return false
		}
		return validPort(rest[1:])
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i+1:]
		if !validPort(port) {
			return false
		}
	}
	return validName(name)
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 || strings.TrimLeft(p, "0123456789") != "" {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// validName accepts dot-separated labels of letters, digits, '-' and '_' (container
// and compose service names use '_'); IPv4 addresses pass as such labels.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
