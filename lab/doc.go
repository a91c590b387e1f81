// Package lab runs a whole payment platform in one process, for the demo,
// the benchmarks, integration tests and drills: an embedded etcd, a map
// with two IDCs of two cells each, a paycell instance per cell with its own
// books (SQLite files by default, or MariaDB databases), the virtual bank,
// and cellrouter in front of the cells. It runs cutovers with the real
// runner, the real etcd control and the configured data mover, and checks
// the books at the end (package lab/books).
//
// Nothing here is a fake: the cells register in etcd with leases and acks,
// their guards decide from the map they watch, the router proxies real
// HTTP, and the data movers copy or wait for real rows.
package lab
