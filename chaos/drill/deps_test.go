package drill_test

import (
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// allowedImports are what the package may import besides the standard
// library: it is a pure core (STYLE.md rules 1 and 5). failover is there
// for ParseStages only; the module's deps_test.go keeps failover itself
// free of network, etcd and SQL packages.
var allowedImports = map[string]string{
	"sigs.k8s.io/yaml":                    "scenario files are YAML",
	"github.com/cellkit/cellkit/failover": "cutover stages are validated with failover.ParseStages",
}

func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if !strings.Contains(first, ".") {
				if path == "net" || strings.HasPrefix(path, "net/http") || path == "database/sql" || path == "os/exec" {
					t.Errorf("%s imports %s: the drill core does no network, SQL or process I/O (chaos/labdrill does)", name, path)
				}
				continue // the standard library
			}
			if _, ok := allowedImports[path]; !ok {
				t.Errorf("%s imports %s: the drill core may import only the standard library and %v", name, path, keys(allowedImports))
			}
		}
	}
}

func keys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
