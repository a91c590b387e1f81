// Package scenarios holds the built-in drill scenarios (YAML, see
// chaos/drill and docs/runbooks/drills.md), embedded so `cellctl drill
// run NAME` finds them without the source tree.
package scenarios

import (
	"embed"
	"io/fs"
	"strings"

	"github.com/cellkit/cellkit/chaos/drill"
)

// FS holds the scenario files, *.yaml at its root.
//
//go:embed *.yaml
var FS embed.FS

// Load parses every built-in scenario, by name.
func Load() (map[string]*drill.Scenario, error) {
	out := map[string]*drill.Scenario{}
	err := fs.WalkDir(FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := FS.ReadFile(path)
		if err != nil {
			return err
		}
		sc, err := drill.Parse(path, data)
		if err != nil {
			return err
		}
		out[sc.Name] = sc
		return nil
	})
	return out, err
}
