package console

import (
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// pathID is a positive integer path parameter, or 0 (answered 404 by the caller).
func pathID(r *http.Request, name string) int64 {
	id, err := strconv.ParseInt(chi.URLParam(r, name), 10, 64)
	if err != nil || id <= 0 {
		return 0
	}
	return id
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request) {
	c.fail(w, r, http.StatusNotFound, "There is nothing here.")
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v == nil {
				return "never"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		}
		return ""
	},
	"str": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"hex":   func(v uint32) string { return fmt.Sprintf("0x%08x", v) },
	"lower": strings.ToLower,
	"add":   func(a, b int) int { return a + b },
	"list":  func(s ...string) []string { return s },
	// percent shows a crash-free share: 99.95 % is not 100 %, so two decimals near the top.
	"percent": func(p *float64) string {
		if p == nil {
			return ""
		}
		if *p >= 99 && *p < 100 {
			return fmt.Sprintf("%.2f %%", *p)
		}
		return fmt.Sprintf("%.1f %%", *p)
	},
}

// now is the pages' clock (UTC).
func (c *Console) now() time.Time { return time.Now().UTC() }
