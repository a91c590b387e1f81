package cellkit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// coreRoots are the pure cores (DESIGN.md, "Where code lives"). They are
// checked with every package below them except the adapters in
// coreAdapters.
var coreRoots = []string{"router", "cell", "failover"}

// coreAdapters sit inside a core's tree but are adapters: they may use the
// network. A core package importing one of them is still caught, through
// the adapter's own imports.
var coreAdapters = []string{"router/gateway", "router/client", "cell/wire", "cell/grpcguard", "cell/httpguard", "cell/guardmetrics"}

// forbidden lists what a core package must not import, directly or
// transitively, and why. Tree entries also forbid every package below the
// path. "net" is exact because net/netip and net/url are pure;
// "database/sql" is exact because database/sql/driver is only interfaces
// and common pure libraries import it (github.com/google/uuid does).
var forbidden = []struct {
	path   string
	tree   bool
	reason string
}{
	{"go.etcd.io", true, "etcd is reached through infra/etcdstore; cores take small interfaces and tests use fakes of them"},
	{"net", false, "cores do no network I/O; sockets belong to adapters (router/gateway, router/client, infra) and cmd"},
	{"net/http", true, "HTTP serving and calling belong to router/gateway, router/client, the cell guard's middleware adapter and cmd"},
	{"database/sql", false, "the data tier is reached through DataMover adapters in infra"},
	{"google.golang.org/grpc", true, "gRPC interceptors, resolvers and balancers live in adapter packages"},
	{"github.com/hashicorp", true, "Consul and other HashiCorp clients belong to infra adapters"},
}

// violation reports the packages under one forbidden entry that a checked
// package reaches.
type violation struct {
	pkg    string   // the checked package
	rule   string   // the forbidden entry's path
	reason string   // the forbidden entry's reason
	deps   []string // forbidden packages reached, in go list order
	chain  []string // pkg, ..., deps[0]: one import path that reaches it
}

func (v violation) String() string {
	s := fmt.Sprintf("%s must not import %s: %s\n\timport chain: %s",
		v.pkg, v.rule, v.reason, strings.Join(v.chain, " -> "))
	if len(v.deps) > 1 {
		s += fmt.Sprintf("\n\tand %d more under %s", len(v.deps)-1, v.rule)
	}
	return s
}

// forbiddenRule returns the index in forbidden of the entry path falls
// under, or -1.
func forbiddenRule(path string) int {
	for i, f := range forbidden {
		if path == f.path || (f.tree && strings.HasPrefix(path, f.path+"/")) {
			return i
		}
	}
	return -1
}

// listedPackage is the part of `go list -json` output the checker reads.
type listedPackage struct {
	ImportPath string
	DepOnly    bool
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
	DepsErrors []*struct{ Err string }
}

// goList runs `go list -e -deps -json` on patterns from the module root.
func goList(patterns ...string) ([]listedPackage, error) {
	args := append([]string{"list", "-e", "-deps", "-json"}, patterns...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
}

// checkDeps lists patterns with their dependencies and returns the packages
// matched by patterns (minus those for which skip reports true) and every
// forbidden import each of them reaches.
func checkDeps(skip func(importPath string) bool, patterns ...string) (checked []string, vs []violation, err error) {
	pkgs, err := goList(patterns...)
	if err != nil {
		return nil, nil, err
	}
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	for _, p := range pkgs {
		if p.DepOnly || skip(p.ImportPath) {
			continue
		}
		// A package that does not load cannot be vouched for.
		if p.Error != nil {
			return nil, nil, fmt.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		if len(p.DepsErrors) > 0 {
			return nil, nil, fmt.Errorf("%s: dependency: %s", p.ImportPath, p.DepsErrors[0].Err)
		}
		checked = append(checked, p.ImportPath)
		byRule := make(map[int]*violation)
		for _, dep := range p.Deps {
			i := forbiddenRule(dep)
			if i < 0 {
				continue
			}
			if v := byRule[i]; v != nil {
				v.deps = append(v.deps, dep)
				continue
			}
			byRule[i] = &violation{
				pkg: p.ImportPath, rule: forbidden[i].path, reason: forbidden[i].reason,
				deps: []string{dep}, chain: importChain(imports, p.ImportPath, dep),
			}
		}
		for i := range forbidden {
			if v := byRule[i]; v != nil {
				vs = append(vs, *v)
			}
		}
	}
	return checked, vs, nil
}

// importChain returns a shortest import path from -> ... -> to.
func importChain(imports map[string][]string, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var chain []string
			for p := to; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, next := range imports[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	return []string{from, "?", to}
}

// modulePath reads the module path from go.mod, so the adapter exclusions
// can be matched by import path.
func modulePath(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(mod), `"`)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

func TestCoreDependencies(t *testing.T) {
	mod := modulePath(t)
	var patterns []string
	for _, root := range coreRoots {
		if fi, err := os.Stat(root); err == nil && fi.IsDir() {
			patterns = append(patterns, "./"+filepath.ToSlash(root)+"/...")
		}
	}
	if len(patterns) == 0 {
		t.Fatalf("none of the core directories %v exists; nothing to check", coreRoots)
	}
	isAdapter := func(path string) bool {
		for _, a := range coreAdapters {
			if p := mod + "/" + a; path == p || strings.HasPrefix(path, p+"/") {
				return true
			}
		}
		return false
	}
	checked, vs, err := checkDeps(isAdapter, patterns...)
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) == 0 {
		t.Fatalf("go list %v found no core package; the check would pass vacuously", patterns)
	}
	t.Logf("checked %d core packages: %v", len(checked), checked)
	for _, v := range vs {
		t.Error(v)
	}
}

// TestCheckDepsFindsViolations keeps the checker honest: packages known to
// use the network and etcd must be reported, and a pure one must not.
func TestCheckDepsFindsViolations(t *testing.T) {
	none := func(string) bool { return false }
	for _, tc := range []struct {
		pkg  string
		want []string // forbidden entries that must be reported
	}{
		{"net/http/httptest", []string{"net", "net/http"}},
		{"./infra/etcdembed", []string{"go.etcd.io", "net", "net/http", "google.golang.org/grpc"}},
		{"strings", nil},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			checked, vs, err := checkDeps(none, tc.pkg)
			if err != nil {
				t.Fatal(err)
			}
			if len(checked) != 1 {
				t.Fatalf("checked %v, want just %s", checked, tc.pkg)
			}
			got := make(map[string]violation)
			for _, v := range vs {
				t.Logf("reported as expected: %v", v)
				got[v.rule] = v
			}
			for _, rule := range tc.want {
				v, ok := got[rule]
				if !ok {
					t.Errorf("no violation reported for %s", rule)
					continue
				}
				if v.reason == "" || len(v.chain) < 2 || v.chain[0] != checked[0] || v.chain[len(v.chain)-1] != v.deps[0] {
					t.Errorf("violation %+v: want a reason and a chain from %s to %s", v, checked[0], v.deps[0])
				}
			}
			if tc.want == nil && len(vs) > 0 {
				t.Errorf("pure package reported: %v", vs)
			}
		})
	}
}

func TestForbiddenRule(t *testing.T) {
	for path, want := range map[string]bool{
		"net":                             true,
		"net/http":                        true,
		"net/http/httptrace":              true,
		"database/sql":                    true,
		"database/sql/driver":             false,
		"google.golang.org/grpc":          true,
		"google.golang.org/grpc/codes":    true,
		"go.etcd.io/etcd/client/v3":       true,
		"github.com/hashicorp/consul/api": true,
		"net/netip":                       false,
		"net/url":                         false,
		"google.golang.org/grpcx":         false,
		"go.etcd.iox/foo":                 false,
		"github.com/cespare/xxhash/v2":    false,
	} {
		if got := forbiddenRule(path) >= 0; got != want {
			t.Errorf("forbidden(%q) = %v, want %v", path, got, want)
		}
	}
}
