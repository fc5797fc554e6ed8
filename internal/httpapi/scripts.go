package httpapi

import (
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/ciscript"
)

// registerScripts serves the CI helper scripts with this service's URL baked in.
func (s *Server) registerScripts() {
	serve := func(render func(string) string, ctype, name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			base, err := s.deps.PublicURL.BaseURL(r)
			if err != nil {
				writeError(w, r, err)
				return
			}
			// The URL depends on the request's host: a shared cache must not hand one client's to another.
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Content-Disposition", "inline; filename="+name)
			_, _ = w.Write([]byte(render(base)))
		}
	}
	s.router.Get("/api/pipeline/upload.sh", serve(ciscript.Shell, "text/x-shellscript; charset=utf-8", "upload.sh"))
	s.router.Get("/api/pipeline/upload.ps1", serve(ciscript.PowerShell, "text/plain; charset=utf-8", "upload.ps1"))
	for _, n := range []string{"upload.sh", "upload.ps1"} {
		s.api.OpenAPI().AddOperation(&huma.Operation{OperationID: "pipeline-script-" + strings.ReplaceAll(n, ".", "-"), Method: http.MethodGet,
			Path: "/api/pipeline/" + n, Summary: "CI helper script " + n + " (public; uploads with a pipeline token)", Tags: []string{"Pipeline"},
			Description: "The service's URL in the script is PUBLIC_BASE_URL, else derived from the request's host (forwarded headers only with TRUST_PROXY_HEADERS).",
			Responses:   map[string]*huma.Response{"200": {Description: "The script"}, "400": {Description: "PUBLIC_BASE_URL is unset and the request's host is not a valid host[:port]"}}})
	}
}
