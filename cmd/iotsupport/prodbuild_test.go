package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/proctest"
)

const modulePath = "github.com/iotsupport/iotsupport"

// listDeps is `go list -deps` of this package: one "importpath|standard|dir|gofiles" line each.
func listDeps(t *testing.T, tags string) []string {
	t.Helper()
	args := []string{"list", "-deps", "-f", `{{.ImportPath}}|{{.Standard}}|{{.Dir}}|{{join .GoFiles ","}}`}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	out, err := exec.Command("go", append(args, ".")...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// testPackage tells whether a package linked into the binary is a test helper:
// an element of its path ends in "test" (bundletest, apitest, httptest), or it is
// the standard testing package or one under it. The standard library's own
// internal packages are exempt: internal/testlog and internal/synctest belong to
// os, sync and time and are linked into every Go program.
func testPackage(path string, standard bool) bool {
	if standard {
		if path == "testing" || strings.HasPrefix(path, "testing/") {
			return true
		}
		if strings.HasPrefix(path, "internal/") || strings.Contains(path, "/internal/") {
			return false
		}
	}
	for _, el := range strings.Split(path, "/") {
		if strings.HasSuffix(el, "test") {
			return true
		}
	}
	return false
}

func TestTestPackageRule(t *testing.T) {
	for path, want := range map[string]bool{
		modulePath + "/internal/bundle/bundletest": true, modulePath + "/internal/apitest": true,
		"net/http/httptest": true, "testing": true, "testing/fstest": true, "example.com/foo/footest/x": true,
		modulePath + "/internal/bundle": false, modulePath + "/internal/testsession": false,
		"internal/testlog": false, "internal/synctest": false, "net/http": false,
	} {
		if got := testPackage(path, !strings.Contains(path, ".")); got != want {
			t.Errorf("testPackage(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestProductionBinaryLinksNoTestPackages keeps test builders and fakes out of the
// server binary: what the binary needs (bench builds firmware from test ELFs) is
// production code with its own tests.
func TestProductionBinaryLinksNoTestPackages(t *testing.T) {
	for _, l := range listDeps(t, "") {
		f := strings.Split(l, "|")
		if testPackage(f[0], f[1] == "true") {
			t.Errorf("the production binary links the test package %s", f[0])
		}
	}
}

// TestProductionBuildIgnoresTestHooks: no file of a production build mentions the
// IOTSUPPORT_TEST_* variables; they are read only in files behind the test hooks
// tag (the tagged build is scanned too, so the scan is known to find them).
func TestProductionBuildIgnoresTestHooks(t *testing.T) {
	mentions := func(tags string) []string {
		var found []string
		for _, l := range listDeps(t, tags) {
			f := strings.Split(l, "|")
			if f[0] != modulePath && !strings.HasPrefix(f[0], modulePath+"/") || f[3] == "" {
				continue
			}
			for _, name := range strings.Split(f[3], ",") {
				b, err := os.ReadFile(filepath.Join(f[2], name))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), "IOTSUPPORT_TEST_") {
					found = append(found, f[0]+"/"+name)
				}
			}
		}
		return found
	}
	if found := mentions(""); len(found) > 0 {
		t.Errorf("production files read test hook variables: %v", found)
	}
	if found := mentions(proctest.TestHooksTag); len(found) == 0 {
		t.Errorf("no file of the %s build mentions IOTSUPPORT_TEST_: the scan misses the hooks", proctest.TestHooksTag)
	}
}
