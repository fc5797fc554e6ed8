package httpapi

import (
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
)

// listOp marks a list route: a query parameter it does not declare is refused with
// 400 naming it, so a mistyped filter (?device_model_id= for ?model_id=) cannot
// silently return the whole collection. The allowed set is the route's own declared
// query parameters — the `query:"…"` fields of its input struct, as listed in the
// OpenAPI document — so adding a parameter there is all it takes.
func listOp(op huma.Operation) huma.Operation {
	op.Middlewares = append(op.Middlewares, strictQuery)
	op.Description = strings.TrimSpace(op.Description + " Query parameters not listed here are refused with 400.")
	return op
}

func strictQuery(ctx huma.Context, next func(huma.Context)) {
	var allowed []string
	for _, p := range ctx.Operation().Parameters {
		if p.In == "query" {
			allowed = append(allowed, p.Name)
		}
	}
	u := ctx.URL()
	var unknown []string
	for name := range u.Query() {
		if !slices.Contains(allowed, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		next(ctx)
		return
	}
	sort.Strings(unknown)
	msg := "Unknown query parameter " + strings.Join(quoteAll(unknown), ", ")
	if len(allowed) == 0 {
		msg += "; this route takes none"
	} else {
		msg += "; allowed: " + strings.Join(allowed, ", ")
	}
	r, w := humachi.Unwrap(ctx)
	env := newEnvelope(r.Context(), http.StatusBadRequest, "VALIDATION_FAILED", msg)
	for _, n := range unknown {
		env.Details.Errors = append(env.Details.Errors, FieldErrors{Field: "query." + n, Message: "unknown query parameter"})
	}
	writeEnvelope(w, env)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
