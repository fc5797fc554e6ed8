package console

import (
	"crypto/subtle"
	"net/http"

	"github.com/iotsupport/iotsupport/internal/sessions"
)

// logout ends the session (server-side, so a copied cookie stops working) and clears the cookie.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if s := session(r); s != nil {
		if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.CSRF)) != 1 {
			c.fail(w, r, http.StatusForbidden, "The form has expired; reload the page and try again.")
			return
		}
		ck, _ := r.Cookie(sessions.CookieName)
		if err := c.d.Sessions.Delete(r.Context(), ck.Value); err != nil {
			c.serviceError(w, r, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessions.CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: c.secure(r)})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
