package app_test

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The structure rules of docs/ARCHITECTURE.md, checked over the source: a rule that only a
// document states is broken by the next change nobody reviews against it.

// sourceFiles maps each package directory under internal/ and cmd/ to its parsed non-test files.
func sourceFiles(t *testing.T) map[string][]*ast.File {
	t.Helper()
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	out := map[string][]*ast.File{}
	for _, top := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || d.Name() == "migrations") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			out[filepath.ToSlash(rel)] = append(out[filepath.ToSlash(rel)], f)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func literals(f *ast.File) []string {
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
			if s, err := strconv.Unquote(bl.Value); err == nil {
				out = append(out, s)
			}
		}
		return true
	})
	return out
}

// documentedOwners reads the "Tables" table of docs/ARCHITECTURE.md: | `table` | `package` | ….
func documentedOwners(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\| `internal/([a-z]+)` \\|")
	owners := map[string]string{}
	inTables := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			inTables = strings.Contains(line, "Tables")
		}
		if m := row.FindStringSubmatch(line); inTables && m != nil {
			owners[m[1]] = "internal/" + m[2]
		}
	}
	if len(owners) == 0 {
		t.Fatal("docs/ARCHITECTURE.md has no table of table owners under a heading naming Tables")
	}
	return owners
}

var writeSQL = regexp.MustCompile(`\b(?:INSERT INTO|UPDATE|DELETE FROM)\s+([a-z_]+)`)

// Exactly one package writes each table, and it is the one docs/ARCHITECTURE.md names.
func TestEveryTableHasOneWriter(t *testing.T) {
	owners := documentedOwners(t)
	writers := map[string]map[string]bool{}
	for pkg, files := range sourceFiles(t) {
		for _, f := range files {
			for _, s := range literals(f) {
				for _, m := range writeSQL.FindAllStringSubmatch(s, -1) {
					table := m[1]
					switch table {
					case "set", "of", "skip", "nowait": // DO UPDATE SET, FOR UPDATE OF / SKIP LOCKED
						continue
					}
					if writers[table] == nil {
						writers[table] = map[string]bool{}
					}
					writers[table][pkg] = true
				}
			}
		}
	}
	var tables []string
	for table := range writers {
		tables = append(tables, table)
	}
	sort.Strings(tables)
	for _, table := range tables {
		owner, ok := owners[table]
		if !ok {
			t.Errorf("table %s is written by %v but has no owner in docs/ARCHITECTURE.md", table, keys(writers[table]))
			continue
		}
		for pkg := range writers[table] {
			if pkg != owner {
				t.Errorf("table %s is written by %s; only its owner %s may write it", table, pkg, owner)
			}
		}
	}
}

// Object-key layouts are spelled out only by their owners.
func TestObjectKeysBuiltOnlyByOwners(t *testing.T) {
	layouts := map[string]string{"coredumps/": "internal/coredumps", "firmware/": "internal/firmware"}
	for pkg, files := range sourceFiles(t) {
		for _, f := range files {
			for _, s := range literals(f) {
				for prefix, owner := range layouts {
					if s == prefix && pkg != owner {
						t.Errorf("%s spells the object-key prefix %q, which only %s may (use its Key/Prefix functions)", pkg, prefix, owner)
					}
				}
			}
		}
	}
}

// SQL differences between the dialects live in internal/db (and jobs, River's own driver
// split); no other package compares the dialect or talks pgx.
func TestDialectStaysInDB(t *testing.T) {
	allowed := map[string]bool{"internal/db": true, "internal/jobs": true, "internal/testenv": true}
	for pkg, files := range sourceFiles(t) {
		if allowed[pkg] {
			continue
		}
		for _, f := range files {
			for _, im := range f.Imports {
				if p, _ := strconv.Unquote(im.Path.Value); strings.HasPrefix(p, "github.com/jackc/pgx") {
					t.Errorf("%s imports %s", pkg, p)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "db" && (sel.Sel.Name == "Postgres" || sel.Sel.Name == "SQLite") {
					t.Errorf("%s uses db.%s: compare no dialect outside internal/db", pkg, sel.Sel.Name)
				}
				if sel.Sel.Name == "Dialect" {
					t.Errorf("%s reads .Dialect: compare no dialect outside internal/db", pkg)
				}
				return true
			})
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
