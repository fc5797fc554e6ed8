package auth

import (
	"net/http"
	"strings"
)

// Need is what a route requires of its caller.
type Need int

const (
	Public Need = iota
	TestingOnly
	DeviceOnly
	PipelineOnly
	ViewerRole
	EditorRole
	AdminRole
	// Authenticated is any identity at all: API token, OIDC user, device.
	Authenticated
	// TestingAdmin routes exist only in testing mode and need an admin.
	TestingAdmin
)

// Policy maps a request to what it needs. Every /api route not named here needs an
// admin-side role, so a new route is protected by default.
func Policy(method, path string) Need {
	switch {
	case path == "/health" || strings.HasPrefix(path, "/health/") || path == "/metrics":
		return Public
	case path == "/api/docs" || strings.HasPrefix(path, "/api/docs/"):
		return Public
	case path == "/api/pipeline/upload.sh" || path == "/api/pipeline/upload.ps1":
		// The helper scripts carry no secret; the upload they perform needs a pipeline token.
		return Public
	case path == "/api/auth/self":
		return Authenticated
	case path == "/api/testing/coredumps":
		// It writes core dumps and objects like a device upload does.
		return TestingAdmin
	case strings.HasPrefix(path, "/api/testing/"):
		return TestingOnly
	case strings.HasPrefix(path, "/api/iot/"):
		return DeviceOnly
	case strings.HasPrefix(path, "/api/pipeline/"):
		return PipelineOnly
	case path == "/api/tokens" || strings.HasPrefix(path, "/api/tokens/") || path == "/api/audit" || strings.HasPrefix(path, "/api/audit/"):
		return AdminRole
	case path == "/api" || strings.HasPrefix(path, "/api/"):
		if method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions {
			return ViewerRole
		}
		return EditorRole
	}
	return Public
}
