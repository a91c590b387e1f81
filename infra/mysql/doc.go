// Package mysql is the `mysql-gtid` data mover of cutovers (a
// failover.DataMover) for cells whose books live in MariaDB servers that
// replicate to each other with GTIDs, and reads the replication state of
// such servers (GTID positions, replication threads, semi-sync).
//
// The topology it expects: one server (or primary) per IDC; the cells of
// an IDC share it; every server replicates from every other with GTIDs
// (MASTER_USE_GTID=slave_pos, a gtid_domain_id per server, ROW binlogs).
// Every row is written only by the cell that owns its key, so replication
// in both directions never conflicts. infra/mysql/mysqllab starts such a
// topology on one machine.
//
//	mover, err := mysql.New(mysql.Config{
//		Cells: map[string]mysql.Cell{
//			"a1": {Server: "idc-a", DSN: "mysql://cellkit@db-a:3306/pay"},
//			"b1": {Server: "idc-b", DSN: "mysql://cellkit@db-b:3306/pay"},
//		},
//		RequireSemiSync: true,
//	})
//	runner := failover.Runner{Mover: mover, ...}
//
// WaitData runs after the stage's barrier: no cell writes the moving slots
// any more. For each distinct (source server, target server) pair of the
// movement it reads the source's @@gtid_binlog_pos and runs
// MASTER_GTID_WAIT on the target until the target has applied it (domains
// the target already has, such as its own, are left out: MASTER_GTID_WAIT
// compares with @@gtid_slave_pos, which lacks them). It passes with a
// description ("b1 (idc-b) reached a1's GTID 1-1-5512 in 12ms"), or fails
// so the stage is not flipped:
//
//   - *LagError (ErrLagging): the target had not applied the position
//     within Config.Timeout; it says where the target got and what its
//     replication threads were doing.
//   - *SemiSyncError (ErrSemiSyncOff): RequireSemiSync is set and
//     semi-sync is not in force on the source as master (configured off,
//     or fallen back to asynchronous) or on the target as replica.
//   - *UnreachableError (ErrSourceUnreachable): the source did not answer.
//     With DrainIfSourceDown (an emergency failover: the source's IDC is
//     lost) the gate instead waits until the target has applied everything
//     it received from the source, and says so in its description.
//
// Moves between cells on one server pass at once: there is nothing to
// carry. The mover holds no state between calls and is safe for
// concurrent use; it needs only the REPLICATION CLIENT (SLAVE MONITOR)
// privilege on each server.
//
// Tests run real MariaDB servers (mysqllab; Debian's mariadb-server
// package, which scripts/tools/mariadb.sh installs).
package mysql
