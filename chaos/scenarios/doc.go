// Package scenarios holds the built-in drill scenarios (YAML, see
// chaos/drill and docs/runbooks/drills.md), embedded so `cellctl drill
// run NAME` finds them without the source tree.
package scenarios

import "embed"

// FS holds the scenario files, *.yaml at its root.
//
//go:embed *.yaml
var FS embed.FS
