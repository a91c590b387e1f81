// Package chaos is the home of cellkit's drills; the work is in its
// subpackages:
//
//   - chaos/netfault: TCP fault proxies (toxiproxy, in-process) on the
//     lab's network paths: latency, partition (blackhole), bandwidth, reset.
//   - chaos/reqfault: request faults (latency, error status, abort) in cells
//     and routers, switched through etcd under /cellkit/<cluster>/chaos/,
//     each with a mandatory expiry.
//   - chaos/procfault: kill -9, SIGSTOP/SIGCONT and stop pulses (gray
//     failure) for processes a drill started.
//   - chaos/drill: scenario files (YAML) and reports (Markdown, JSON, SVG).
//   - chaos/labdrill: runs a scenario on the local lab and checks the books.
//   - chaos/scenarios: the built-in scenarios.
//
// `cellctl drill run NAME|FILE` runs a drill; docs/runbooks/drills.md
// explains scenarios, faults and reports.
package chaos
