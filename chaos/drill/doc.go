// Package drill is the pure core of chaos drills: scenario files (what to
// run), reports (what happened) and the report's chart. It does no I/O
// beyond reading a scenario file and writing report files; the runner that
// builds a lab, injects the faults and fills a Report lives in
// chaos/labdrill.
//
// # Scenarios
//
// A scenario is YAML, parsed strictly: an unknown field, a field set for a
// step kind it does not apply to, or a step that refers to something no
// earlier step did (healing a fault never injected, waiting for a cutover
// that is not running, resuming without a killed controller) is refused
// with a *ScenarioError that names the file, the step and the field:
//
//	kill-idc.yaml: step 3 (inject): unknown field "lantency" (did you mean "latency"?)
//
// Durations are Go duration strings ("2s", "150ms"). A step is an object
// with exactly one of load, stopLoad, wait, inject, heal, cutover,
// failover, resume or expect; "wait: 3s", "heal: all", "heal: NAME" and
// "- stopLoad:" are short forms.
//
//	name: kill-idc-a
//	description: Kill IDC-A under load and fail over to IDC-B.
//	lab: {db: mariadb, etcdMembers: 3}
//	steps:
//	  - load: {workers: 16}
//	  - wait: 3s
//	  - inject: {kind: kill, target: idc:IDC-A}
//	  - wait: {until: detected}
//	  - failover: {from: IDC-A, to: IDC-B, semiSyncOff: true}
//	  - wait: {until: payments, count: 200}
//	  - stopLoad:
//	  - heal: all
//	expect: {maxLost: -1, cutover: done}
//
// Parse and Load validate and fill in the defaults (see Scenario.Validate
// for the list); Expect blocks keep their nils, which Expect.WithDefaults
// resolves.
//
// # Reports
//
// A Report is plain data with JSON tags. WriteJSON, WriteMarkdown and
// WriteSVG render it deterministically (times in UTC, maps sorted), so
// reports diff cleanly and the tests compare them with golden files in
// testdata (go test -update rewrites them). WriteFiles writes all three
// beside each other; Summary is a few lines for a terminal.
//
// The package imports the standard library, sigs.k8s.io/yaml and, for
// ParseStages, failover; nothing that reaches the network, etcd or SQL
// (deps_test.go).
package drill
