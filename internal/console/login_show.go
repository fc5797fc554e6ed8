package console

import (
	"net/http"
	"net/url"
	"strings"
)

// loginShow is the sign-in form: one field for an API token.
func (c *Console) loginShow(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.URL.Query().Get("next"))
	if session(r) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", "Sign in", loginData{Next: next, SSO: c.d.SSO != nil})
}

type loginData struct {
	Next  string
	SSO   bool
	Error string
}

// localPath keeps a redirect target on this site: a path starting with one "/", else "/".
// "//evil.example" and "/\evil.example" are other hosts to a browser.
func localPath(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n\t") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
