// Package cellkit is a Go kit for cell-based multi-active deployments
// (unitized architecture) of payment platforms.
//
// The user keyspace is cut into a fixed number of slots; every slot is owned
// by exactly one cell, and a cell runs the whole payment chain in one IDC
// (data center). A versioned shard map in etcd says which cell owns which
// slot. Operators move slots between cells in stages for drills, maintenance
// and disaster recovery, and fail a whole IDC over when it dies. Everything
// serves one promise: at no instant do two cells accept a write for the same
// user.
//
// The kit is a set of packages:
//
//   - router: slots, keys and IDs, the immutable shard-map table and its
//     lookups, the watcher that swaps tables, the gateway and the client SDK.
//   - cell: the cell model and the in-cell guard, acks and self-fencing.
//   - failover: stage planning, the cutover state machine and its runner,
//     emergency failover and gates.
//   - shadow: marked test traffic for full-link load tests.
//   - chaos: faults, drill scenarios, invariant checks and reports.
//   - infra: adapters for etcd, Consul, Vitess, MySQL, SQLite and Prometheus.
//   - terraform: the Terraform provider and modules for cells.
//   - cmd: the cellctl, cellrouter and paycell programs.
//
// The cores (router, cell, failover) are pure: they import no etcd, network
// or SQL package, take time as an input, and are driven by the adapters in
// infra and the programs in cmd. deps_test.go in this package enforces the
// direction.
//
// The design (protocols, etcd layout, budgets) is in docs/architecture.md.
// This package holds no code of its own.
package cellkit
