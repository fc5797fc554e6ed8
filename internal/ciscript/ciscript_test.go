package ciscript

import (
	"os/exec"
	"strings"
	"testing"
)

// nasty are URL-ish values that would run code or break out of a naively quoted string.
var nasty = []string{
	"http://iot.example.com",
	"http://x/$(id)",
	"http://x/`id`",
	"http://x/it's",
	"http://x/''",
	`http://x/\'`,
	"http://x/\"$HOME\"",
	"http://x/\u2018$(id)\u2019",
	"http://x/a\nb",
	"",
}

func TestShellQuoteIsOneWordWithTheExactValue(t *testing.T) {
	for _, v := range nasty {
		out, err := exec.Command("bash", "-c", `set -u; eval "v=$1"; printf %s "$v"`, "_", ShellQuote(v)).Output()
		if err != nil {
			t.Fatalf("bash rejected %q: %v", ShellQuote(v), err)
		}
		if string(out) != v {
			t.Fatalf("ShellQuote(%q) evaluates to %q", v, out)
		}
	}
}

func TestPowerShellQuoteDoublesEveryQuote(t *testing.T) {
	for in, want := range map[string]string{
		"http://x/$(id)":                     "'http://x/$(id)'",
		"http://x/it's":                      "'http://x/it''s'",
		"http://x/\u2018a\u2019\u201a\u201b": "'http://x/\u2018\u2018a\u2019\u2019\u201a\u201a\u201b\u201b'",
	} {
		if got := PowerShellQuote(in); got != want {
			t.Fatalf("PowerShellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestScriptsGetTheURLOnceAndQuoted(t *testing.T) {
	const u = "http://x/it's"
	sh, ps := Shell(u), PowerShell(u)
	if strings.Contains(sh, placeholder) || strings.Count(sh, "BACKEND_URL="+ShellQuote(u)+"\n") != 1 {
		t.Fatalf("upload.sh does not assign the quoted URL once:\n%s", sh)
	}
	if strings.Contains(ps, placeholder) || strings.Count(ps, "$BackendUrl = "+PowerShellQuote(u)+"\n") != 1 {
		t.Fatalf("upload.ps1 does not assign the quoted URL once:\n%s", ps)
	}
	if err := exec.Command("bash", "-n", "-c", sh).Run(); err != nil {
		t.Fatalf("upload.sh does not parse: %v", err)
	}
}
