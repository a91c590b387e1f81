// Package infra groups the adapters that connect cellkit's pure cores to real
// systems; it holds no code itself. Each adapter is a sub-package named for
// the system it adapts and implements small interfaces owned by the core
// that consumes it.
//
// Built so far:
//
//   - infra/etcdembed: an embedded single-member etcd for `cellctl dev`,
//     the demo and tests.
//   - infra/etcdstore: the shard map in etcd: linearizable loads, an
//     ordered watch, and compare-and-swap updates with an audit record.
//   - infra/etcdcell: a guard instance in etcd (lease, ack, endpoint),
//     the ack barrier, discovery.
//   - infra/etcdcutover: cutover records, the one-at-a-time lock, the
//     failover.Control of a runner, liveness of a lost IDC.
//   - infra/prometheus: a PromQL SLO gate for cutovers.
//   - infra/sqldb: SQLite (pure Go) and MariaDB/MySQL databases from one
//     DSN form.
//   - infra/sqlmove: the copy data mover (copy, verify, journal, prune).
//   - infra/mysql: the mysql-gtid data mover; mysqllab starts MariaDB
//     servers replicating with GTID and semi-sync, for tests and the lab.
//
// Planned: Consul discovery and health, Vitess.
package infra
