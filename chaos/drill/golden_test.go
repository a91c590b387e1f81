package drill_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -update is the contract's name; -rewrite is the one the router's and the
// failover's golden files also answer to (STYLE.md rule 11).
var (
	update  = flag.Bool("update", false, "rewrite the golden files in testdata/ instead of comparing")
	rewrite = flag.Bool("rewrite", false, "same as -update")
)

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update || *rewrite {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the code renders (go test -update rewrites it):\n%s", path, firstDiff(string(want), string(got)))
	}
}

// firstDiff shows the first differing line with a little context.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g || i >= len(wl) || i >= len(gl) {
			var b strings.Builder
			for j := max(0, i-2); j < i; j++ {
				fmt.Fprintf(&b, "   %4d  %s\n", j+1, wl[j])
			}
			fmt.Fprintf(&b, "-  %4d  %s\n+  %4d  %s\n", i+1, w, i+1, g)
			return b.String()
		}
	}
	return "(no line differs: line endings?)"
}
