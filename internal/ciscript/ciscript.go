// Package ciscript holds the CI helper scripts the service hands out (upload.sh for
// bash, upload.ps1 for PowerShell) and fills in this service's URL, quoted for each
// shell so that no URL, however odd, runs code in the CI job.
package ciscript

import (
	_ "embed"
	"strings"
)

var (
	//go:embed upload.sh
	uploadSh string
	//go:embed upload.ps1
	uploadPs1 string
)

// placeholder stands where the scripts assign the base URL; it is replaced by a
// quoted literal, so the scripts do not quote it themselves.
const placeholder = "__BACKEND_URL__"

// Shell is upload.sh with baseURL filled in.
func Shell(baseURL string) string {
	return strings.Replace(uploadSh, placeholder, ShellQuote(baseURL), 1)
}

// PowerShell is upload.ps1 with baseURL filled in.
func PowerShell(baseURL string) string {
	return strings.Replace(uploadPs1, placeholder, PowerShellQuote(baseURL), 1)
}

// ShellQuote makes s one single-quoted POSIX shell word: nothing inside single
// quotes is special, and a quote itself is closed, escaped and reopened.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PowerShellQuote makes s a single-quoted (verbatim) PowerShell string. PowerShell
// also ends such strings at the typographic single quotes, so every one is doubled.
func PowerShellQuote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		if isPowerShellQuote(r) {
			b.WriteRune(r)
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

func isPowerShellQuote(r rune) bool {
	switch r {
	case '\'', '\u2018', '\u2019', '\u201a', '\u201b':
		return true
	}
	return false
}
