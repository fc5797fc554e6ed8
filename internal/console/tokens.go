package console

import (
	"net/http"
	"strings"

	"github.com/iotsupport/iotsupport/internal/auth"
)

// tokenForm creates an API token.
type tokenForm struct {
	Name, Role string
	Errors     map[string]string
}

func (f *tokenForm) Validate() bool {
	if f.Name == "" || len(f.Name) > 100 {
		f.Errors["name"] = "A name is 1 to 100 characters."
	}
	if !auth.ValidRole(f.Role) {
		f.Errors["role"] = "Choose viewer, editor, admin or pipeline."
	}
	return len(f.Errors) == 0
}

// tokenList is `/tokens` (admin): every token and the create form.
func (c *Console) tokenList(w http.ResponseWriter, r *http.Request) {
	c.renderTokens(w, r, http.StatusOK, &tokenForm{Role: "viewer", Errors: map[string]string{}}, "")
}

func (c *Console) renderTokens(w http.ResponseWriter, r *http.Request, status int, f *tokenForm, secret string) {
	ts, err := c.d.Tokens.List(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	c.render(w, r, status, "tokens", "API tokens", map[string]any{"Tokens": ts, "Form": f, "Secret": secret,
		"Roles": []string{"viewer", "editor", "admin", "pipeline"}})
}

// tokenCreate creates a token and shows its secret once.
func (c *Console) tokenCreate(w http.ResponseWriter, r *http.Request) {
	f := &tokenForm{Name: strings.TrimSpace(r.PostFormValue("name")), Role: r.PostFormValue("role"), Errors: map[string]string{}}
	if !f.Validate() {
		c.renderTokens(w, r, http.StatusBadRequest, f, "")
		return
	}
	_, secret, err := c.d.Tokens.Create(r.Context(), f.Name, f.Role)
	if err != nil {
		if msg, ok := refusal(err); ok {
			f.Errors["name"] = msg
			c.renderTokens(w, r, http.StatusConflict, f, "")
			return
		}
		c.serviceError(w, r, err)
		return
	}
	c.renderTokens(w, r, http.StatusCreated, &tokenForm{Role: "viewer", Errors: map[string]string{}}, secret)
}

// tokenRevoke revokes a token; console sessions signed in with it end with it.
func (c *Console) tokenRevoke(w http.ResponseWriter, r *http.Request) {
	if err := c.d.Tokens.RevokeByID(r.Context(), pathID(r, "id")); err != nil {
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}
