// Package mysqllab runs a MariaDB replication lab on one machine: a
// server per IDC as a local process on a loopback port, each a master and
// a replica of every other, with GTID replication (distinct server_id and
// gtid_domain_id per server, ROW binlogs, MASTER_USE_GTID=slave_pos) and
// semi-synchronous replication on in every direction. It is what the
// mysql-gtid data mover (infra/mysql) is tested against and what
// `cellctl lab up --db mariadb` starts.
//
//	lab, err := mysqllab.Start(ctx, mysqllab.Config{Dir: dir}) // idc-a, idc-b
//	defer lab.Close()
//	lab.CreateDatabase(ctx, "pay")                 // on idc-a; replicated
//	dsnA := lab.DSN("idc-a", "pay")                // mysql://root@127.0.0.1:PORT/pay
//	lab.Kill("idc-a")                              // a power loss
//	lab.Restart(ctx, "idc-a")                      // back from its data
//	lab.WaitReady(ctx)                             // replication and semi-sync up again
//
// Every server replicates from every other directly, with
// log_slave_updates off: a server's binlog holds only its own writes (one
// GTID domain), so a semi-sync master never waits on a dead peer to
// acknowledge what it merely applied.
//
// Start returns when every replication connection runs both threads and
// every master reports Rpl_semi_sync_master_status ON with each peer
// connected as a semi-sync replica; a two-server lab takes about a second
// on a laptop. The semi-sync timeout is long (1h) so the lab never falls
// back to asynchronous replication silently: while no peer can
// acknowledge, commits block, as semi-sync promises. That includes the
// survivor of a lost peer (Kill): its own commits wait for the dead peer
// until SetSemiSync(survivor, false) makes it asynchronous, which is what
// an operator does once the peer's IDC is declared lost. Replication into
// the survivor is not held up: it drains what it received.
//
// All cells of a cluster use the same database name on their IDC's
// server: replication copies databases by name, so the rows a cell in
// idc-a wrote to "pay" are in "pay" on idc-b when its slots move there.
// Create schemas through one server only (CreateDatabase does); a table
// created at two servers at once breaks replication, as would any row
// written at two servers, which the single-writer rule forbids.
//
// The lab keeps lab.json (ports, pids, settings) in its directory, so
// Attach can manage a lab another process started; with Config.Detach the
// servers outlive the process that started them (cellctl lab up), and
// without it they die with it. Servers run with --no-defaults, so no
// my.cnf on the machine changes them; they run as the current user (as
// root with --user=root). Root has no password and the servers listen on
// 127.0.0.1 only: a lab is for tests and demos, never for real data.
//
// Needs MariaDB 10.3 or newer (mariadbd and mariadb-install-db; Debian's
// mariadb-server package, which scripts/tools/mariadb.sh installs).
// Package mysqllabtest starts a lab for a test.
package mysqllab
