// Package labdrill runs drill scenarios (chaos/drill) against the local
// lab (package lab): it starts the platform — embedded etcd (one member or
// three), four paycell cells in two IDCs, cellrouter, the virtual bank,
// and for MariaDB two real servers replicating to each other — with every
// network path wired through fault proxies, then plays the scenario's
// steps: load, waits, faults (chaos/netfault, chaos/procfault, crashes of
// in-process cells and the router, etcd members stopped), heals, planned
// cutovers, emergency failovers, a killed controller resumed. At the end it
// checks the books (lab/books) and fills a drill.Report: the timeline,
// throughput and errors per second, time to detect, MTTR, RPO (every
// acknowledged payment missing, named), the invariants and the scenario's
// expectations.
//
// Where the faults land. MariaDB servers are real processes and get real
// signals (SIGKILL, SIGSTOP/SIGCONT). Cells, the router and the controller
// run inside the drill's process: "kill" crashes them — listeners and
// connections dropped at once, running requests cancelled, leases left to
// expire, nothing drained or written — which is what etcd, the router, the
// databases and the clients see of a kill -9.
package labdrill
