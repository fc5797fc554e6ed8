package console_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
)

// client is a browser without JavaScript: a cookie jar, same-origin form posts carrying
// the page's CSRF token, redirects not followed (the tests check them).
type client struct {
	t    *testing.T
	s    *apitest.Server
	http *http.Client
	csrf string
}

func newClient(t *testing.T, s *apitest.Server) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, s: s, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) do(req *http.Request) *page {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := &page{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	if m := csrfField.FindStringSubmatch(p.Body); m != nil {
		c.csrf = m[1]
	}
	return p
}

func (c *client) get(path string, hdr ...string) *page {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.s.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.do(req)
}

// post sends a form from this site; "csrf" is added unless given (use "" to leave it out).
func (c *client) post(path string, form url.Values, hdr ...string) *page {
	c.t.Helper()
	if _, ok := form["csrf"]; !ok && c.csrf != "" {
		form.Set("csrf", c.csrf)
	}
	req, _ := http.NewRequest("POST", c.s.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.s.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.do(req)
}

// upload posts a file as the page's script does (multipart field "file", token header).
func (c *client) upload(path string, content []byte, scripted bool) *page {
	c.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "bundle.zip")
	_, _ = fw.Write(content)
	_ = mw.Close()
	target := c.s.URL + path
	if !scripted {
		target += "?csrf=" + url.QueryEscape(c.csrf)
	}
	req, _ := http.NewRequest("POST", target, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", c.s.URL)
	if scripted {
		req.Header.Set("X-CSRF-Token", c.csrf)
		req.Header.Set("X-Requested-With", "fetch")
	}
	return c.do(req)
}

// signIn signs in with the test token of role and loads the overview (for its CSRF token).
func signIn(t *testing.T, s *apitest.Server, role string) *client {
	t.Helper()
	c := newClient(t, s)
	p := c.post("/login", url.Values{"token": {s.Tokens[role]}})
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/" {
		t.Fatalf("sign in as %s: %d %s", role, p.Status, p.Header.Get("Location"))
	}
	if p := c.get("/"); p.Status != 200 {
		t.Fatalf("overview after sign-in: %d", p.Status)
	}
	return c
}

func (p *page) must(t *testing.T, status int, contains ...string) *page {
	t.Helper()
	if p.Status != status {
		t.Fatalf("status %d, want %d; body:\n%s", p.Status, status, p.Body)
	}
	for _, s := range contains {
		if !strings.Contains(p.Body, s) {
			t.Fatalf("page lacks %q:\n%s", s, p.Body)
		}
	}
	return p
}

func (p *page) mustNot(t *testing.T, absent ...string) *page {
	t.Helper()
	for _, s := range absent {
		if strings.Contains(p.Body, s) {
			t.Fatalf("page has %q but must not", s)
		}
	}
	return p
}
