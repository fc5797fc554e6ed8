package console

import (
	"net/http"
	"strconv"
)

// auditList is `/audit` (admin): the newest entries, paged by `before`.
func (c *Console) auditList(w http.ResponseWriter, r *http.Request) {
	before, err := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	if err != nil && r.URL.Query().Get("before") != "" || before < 0 {
		c.fail(w, r, http.StatusBadRequest, "before must be an entry id.")
		return
	}
	es, total, err := c.d.Audit.List(r.Context(), c.d.PageSize, before)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	var next int64
	if len(es) == c.d.PageSize {
		next = es[len(es)-1].ID
	}
	c.render(w, r, http.StatusOK, "audit", "Audit log", map[string]any{"Entries": es, "Total": total, "Next": next})
}
