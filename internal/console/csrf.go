package console

import (
	"crypto/subtle"
	"mime"
	"net/http"
)

// checkCSRF refuses a state change from a session unless it carries the session's token,
// in the form field `csrf` or the `X-CSRF-Token` header (htmx and the upload script).
// Cross-site requests are refused before this by http.CrossOriginProtection.
func (c *Console) checkCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		s := session(r)
		given := r.Header.Get("X-CSRF-Token")
		if given == "" {
			given = r.URL.Query().Get("csrf")
		}
		if given == "" && isForm(r) {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			given = r.PostFormValue("csrf")
		}
		if s == nil || given == "" || subtle.ConstantTimeCompare([]byte(given), []byte(s.CSRF)) != 1 {
			c.fail(w, r, http.StatusForbidden, "The form has expired or did not come from this console; reload the page and try again.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxFormBytes bounds a plain form (configs and schemas are the largest fields).
const maxFormBytes = 1 << 20

// isForm is a URL-encoded form. A multipart body (the firmware upload) is never parsed
// here, which would buffer it: its token comes in the header or the action's query.
func isForm(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}
