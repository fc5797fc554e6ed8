package console

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/naming"
)

// The sign-in redirect's target comes from the query string: whatever it is, the console
// redirects only to a path of this site.
func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/", "/devices/3?x=1", "//evil.example", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
		"/%2f%2fevil.example", "/ok\r\nSet-Cookie: a=b", "\\\\evil", "/./../x", "/@evil.example", "", "/\t/evil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := localPath(next)
		if got != "/" && got != next {
			t.Fatalf("localPath(%q) = %q: neither the input nor /", next, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Host != "" || u.Scheme != "" || u.User != nil || !strings.HasPrefix(got, "/") ||
			strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") || strings.ContainsAny(got, "\r\n\t") {
			t.Fatalf("localPath(%q) = %q leaves this site", next, got)
		}
		// What a browser makes of it: resolved against our origin it stays on our origin.
		base, _ := url.Parse("https://iot.example/login")
		if r := base.ResolveReference(u); r.Host != "iot.example" {
			t.Fatalf("localPath(%q) = %q resolves to host %q", next, got, r.Host)
		}
	})
}

// The device list's filters come from the query string: anything is either refused with
// a message or a filter whose page query is in range.
func FuzzDeviceFilter(f *testing.F) {
	for _, s := range []string{"model=1&active=yes&q=abc&page=2", "page=0", "page=-1", "model=x", "active=maybe", "q=%25_%5C", "page=99999999999999999999",
		"running=1.0.0&seen=24h", "running=../x", "seen=not-7d", "seen=forever"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := readDeviceFilter(q)
		if err != nil {
			return
		}
		p := flt.devices(time.Now())
		if offset := (flt.Page - 1) * 50; flt.Page < 1 || offset < 0 || flt.Model < 0 || len(flt.Q) > 100 ||
			(p.RunningVersion != "" && !naming.ValidVersion(p.RunningVersion)) || (flt.Seen != "" && p.SeenAfter == nil && p.StaleBefore == nil) {
			t.Fatalf("filter %+v from %q gives query %+v", flt, raw, p)
		}
		u, err := url.Parse(flt.PageURL(flt.Page))
		if err != nil {
			t.Fatalf("page URL of %q: %v", raw, err)
		}
		// The pager's links keep every filter.
		if again, err := readDeviceFilter(u.Query()); err != nil || again != flt {
			t.Fatalf("page URL %q of %q reads back as %+v, %v", u, raw, again, err)
		}
	})
}
