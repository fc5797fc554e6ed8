package httpapi

import (
	_ "embed"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"
)

var (
	//go:embed scripts/upload.sh
	uploadSh string
	//go:embed scripts/upload.ps1
	uploadPs1 string
)

// registerScripts serves the CI helper scripts with this server's URL baked in.
func (s *Server) registerScripts() {
	serve := func(script, ctype, name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Content-Disposition", "inline; filename="+name)
			_, _ = w.Write([]byte(strings.ReplaceAll(script, "__BACKEND_URL__", baseURL(r))))
		}
	}
	s.router.Get("/api/pipeline/upload.sh", serve(uploadSh, "text/x-shellscript; charset=utf-8", "upload.sh"))
	s.router.Get("/api/pipeline/upload.ps1", serve(uploadPs1, "text/plain; charset=utf-8", "upload.ps1"))
	for _, n := range []string{"upload.sh", "upload.ps1"} {
		s.api.OpenAPI().AddOperation(&huma.Operation{OperationID: "pipeline-script-" + strings.ReplaceAll(n, ".", "-"), Method: http.MethodGet,
			Path: "/api/pipeline/" + n, Summary: "CI helper script " + n + " (public; uploads with a pipeline token)", Tags: []string{"Pipeline"},
			Responses: map[string]*huma.Response{"200": {Description: "The script"}}})
	}
}
