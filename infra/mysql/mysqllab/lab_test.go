package mysqllab_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/infra/sqldb"
)

// testTimeout bounds every wait; the tests poll, never sleep.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// open opens database on server from the lab's DSN through infra/sqldb,
// as a cell would.
func open(t *testing.T, lab *mysqllab.Lab, server, database string) *sql.DB {
	t.Helper()
	dsn, err := sqldb.ParseDSN(lab.DSN(server, database))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqldb.OpenDSN(testContext(t), dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(testContext(t), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func owners(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(testContext(t), "SELECT owner FROM accounts ORDER BY owner")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	return out
}

func statusOf(t *testing.T, lab *mysqllab.Lab, server string) mysqllab.Status {
	t.Helper()
	sts, err := lab.Status(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Server == server {
			return st
		}
	}
	t.Fatalf("no status for %s in %+v", server, sts)
	return mysqllab.Status{}
}

func TestLabReplicatesBothWaysWithGTIDAndSemiSync(t *testing.T) {
	lab := mysqllabtest.Start(t)
	ctx := testContext(t)
	if got := lab.Servers(); !slices.Equal(got, []string{"idc-a", "idc-b"}) {
		t.Fatalf("Servers = %v", got)
	}
	if dsn := lab.DSN("idc-b", "pay"); dsn != fmt.Sprintf("mysql://root@127.0.0.1:%d/pay", lab.Port("idc-b")) {
		t.Fatalf("DSN = %q", dsn)
	}
	if err := lab.CreateDatabase(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	a, b := open(t, lab, "idc-a", "pay"), open(t, lab, "idc-b", "pay")
	exec(t, a, "CREATE TABLE accounts (owner VARCHAR(64) PRIMARY KEY, slot INT NOT NULL, balance BIGINT NOT NULL)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Each server writes its own owners' rows, as cells do.
	exec(t, a, "INSERT INTO accounts VALUES ('u-a', 1, 100)")
	exec(t, b, "INSERT INTO accounts VALUES ('u-b', 2, 200)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, db := range []*sql.DB{a, b} {
		if got := owners(t, db); !slices.Equal(got, []string{"u-a", "u-b"}) {
			t.Fatalf("owners = %v, want both servers' rows on each", got)
		}
	}

	for _, name := range lab.Servers() {
		st := statusOf(t, lab, name)
		t.Logf("%s: %+v", name, st)
		if !st.Running || st.Error != "" {
			t.Fatalf("%s: running %v, error %q", name, st.Running, st.Error)
		}
		// Each server has applied both domains: its own and its peer's.
		pos, err := mysql.ParsePos(st.CurrentPos)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []uint32{1, 2} {
			if _, ok := pos.Domain(d); !ok {
				t.Errorf("%s: gtid_current_pos %q lacks domain %d", name, st.CurrentPos, d)
			}
		}
		if st.ServerID == 0 || st.DomainID != st.ServerID {
			t.Errorf("%s: server_id %d, gtid_domain_id %d", name, st.ServerID, st.DomainID)
		}
		if len(st.Replicas) != 1 {
			t.Fatalf("%s: %d replication connections, want 1", name, len(st.Replicas))
		}
		r := st.Replicas[0]
		if !r.Running() || r.UsingGTID != "Slave_Pos" || r.SecondsBehind == nil {
			t.Errorf("%s: replica %+v: want both threads running with GTID slave_pos", name, r)
		}
		ss := st.SemiSync
		if !ss.MasterEnabled || !ss.MasterOn || ss.MasterClients != 1 || !ss.ReplicaEnabled || !ss.ReplicaOn {
			t.Errorf("%s: semi-sync %+v: want on as master (1 client) and replica", name, ss)
		}
		if ss.MasterTimeoutMillis != mysqllab.DefaultSemiSyncTimeout.Milliseconds() {
			t.Errorf("%s: semi-sync timeout %dms", name, ss.MasterTimeoutMillis)
		}
	}
	// The commits above waited for the peer's acknowledgement.
	for _, name := range lab.Servers() {
		var n string
		var yes int
		if err := lab.DB(name).QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_yes_tx'").Scan(&n, &yes); err != nil {
			t.Fatal(err)
		}
		if yes == 0 {
			t.Errorf("%s: Rpl_semi_sync_master_yes_tx = 0: no commit was acknowledged semi-synchronously", name)
		}
	}
}

func TestLabKillRestart(t *testing.T) {
	lab := mysqllabtest.Start(t)
	ctx := testContext(t)
	if err := lab.CreateDatabase(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	exec(t, open(t, lab, "idc-a", "pay"), "CREATE TABLE accounts (owner VARCHAR(64) PRIMARY KEY, slot INT NOT NULL, balance BIGINT NOT NULL)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	pid := lab.PID("idc-a")
	if err := lab.Kill("idc-a"); err != nil {
		t.Fatal(err)
	}
	if lab.Running("idc-a") || lab.PID("idc-a") != 0 {
		t.Fatalf("idc-a still running (pid %d) after Kill", lab.PID("idc-a"))
	}
	if st := statusOf(t, lab, "idc-a"); st.Running || st.Error == "" {
		t.Fatalf("status of a killed server: %+v", st)
	}
	if err := lab.WaitReady(ctx); !errors.Is(err, mysqllab.ErrNotRunning) {
		t.Fatalf("WaitReady with a server down = %v, want ErrNotRunning", err)
	}
	if err := lab.Kill("idc-a"); err != nil {
		t.Fatalf("Kill of a dead server: %v", err)
	}
	if err := lab.Restart(ctx, "idc-a"); err != nil {
		t.Fatal(err)
	}
	if p := lab.PID("idc-a"); p == 0 || p == pid {
		t.Fatalf("pid after restart %d (before %d)", p, pid)
	}
	if err := lab.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, open(t, lab, "idc-a", "pay"), "INSERT INTO accounts VALUES ('u-a', 1, 100)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := owners(t, open(t, lab, "idc-b", "pay")); !slices.Equal(got, []string{"u-a"}) {
		t.Fatalf("idc-b owners after idc-a restarted = %v", got)
	}
	// A graceful stop and a restart from it.
	if err := lab.Restart(ctx, "idc-b"); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.Kill("idc-z"); !errors.Is(err, mysqllab.ErrUnknownServer) {
		t.Fatalf("Kill(idc-z) = %v, want ErrUnknownServer", err)
	}
}

func TestLabSetSemiSync(t *testing.T) {
	lab := mysqllabtest.Start(t)
	ctx := testContext(t)
	if err := lab.SetSemiSync(ctx, "idc-a", false); err != nil {
		t.Fatal(err)
	}
	ss := statusOf(t, lab, "idc-a").SemiSync
	if ss.MasterEnabled || ss.MasterOn {
		t.Fatalf("idc-a semi-sync after SetSemiSync(false): %+v", ss)
	}
	if ss := statusOf(t, lab, "idc-b").SemiSync; !ss.MasterOn || !ss.ReplicaOn {
		t.Fatalf("idc-b semi-sync changed: %+v", ss)
	}
	// The setting survives a restart.
	if err := lab.Restart(ctx, "idc-a"); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if ss := statusOf(t, lab, "idc-a").SemiSync; ss.MasterEnabled {
		t.Fatalf("idc-a semi-sync back on after restart: %+v", ss)
	}
	if err := lab.SetSemiSync(ctx, "idc-a", true); err != nil {
		t.Fatal(err)
	}
	if ss := statusOf(t, lab, "idc-a").SemiSync; !ss.MasterEnabled || !ss.MasterOn || ss.MasterClients != 1 {
		t.Fatalf("idc-a semi-sync after SetSemiSync(true): %+v", ss)
	}
}

func TestLabAsyncThenSemiSync(t *testing.T) {
	lab := mysqllabtest.Start(t, func(c *mysqllab.Config) {
		c.Async = true
		c.Servers = []string{"idc-a", "idc-b", "idc-c"}
	})
	ctx := testContext(t)
	for _, name := range lab.Servers() {
		st := statusOf(t, lab, name)
		if st.SemiSync.MasterEnabled || st.SemiSync.ReplicaEnabled {
			t.Errorf("%s: semi-sync in an async lab: %+v", name, st.SemiSync)
		}
		if len(st.Replicas) != 2 {
			t.Errorf("%s: %d replication connections, want 2", name, len(st.Replicas))
		}
	}
	// Turning it on for one master makes its peers acknowledge.
	if err := lab.SetSemiSync(ctx, "idc-c", true); err != nil {
		t.Fatal(err)
	}
	if ss := statusOf(t, lab, "idc-c").SemiSync; !ss.MasterOn || ss.MasterClients != 2 {
		t.Fatalf("idc-c semi-sync: %+v", ss)
	}
	if err := lab.CreateDatabase(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	exec(t, open(t, lab, "idc-c", "pay"), "CREATE TABLE t (id INT PRIMARY KEY)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := open(t, lab, "idc-a", "pay").QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("idc-a does not have idc-c's table: %v", err)
	}
}

func TestLabAttach(t *testing.T) {
	mysqllabtest.Require(t)
	dir := filepath.Join(t.TempDir(), "lab")
	ctx := testContext(t)
	lab, err := mysqllab.Start(ctx, mysqllab.Config{Dir: dir, Detach: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })

	if _, err := mysqllab.Start(ctx, mysqllab.Config{Dir: dir}); !errors.Is(err, mysqllab.ErrExists) {
		t.Fatalf("Start on a lab's directory = %v, want ErrExists", err)
	}
	if _, err := mysqllab.Attach(t.TempDir()); !errors.Is(err, mysqllab.ErrNoLab) {
		t.Fatalf("Attach to an empty directory = %v, want ErrNoLab", err)
	}
	other, err := mysqllab.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range lab.Servers() {
		if other.Port(name) != lab.Port(name) || other.PID(name) != lab.PID(name) || !other.Running(name) {
			t.Fatalf("%s: attached port %d pid %d running %v; started port %d pid %d",
				name, other.Port(name), other.PID(name), other.Running(name), lab.Port(name), lab.PID(name))
		}
	}
	if err := other.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// What an attached lab does is seen by the one that started it.
	if err := other.Stop(ctx, "idc-b"); err != nil {
		t.Fatal(err)
	}
	if lab.Running("idc-b") {
		t.Fatal("idc-b still running after the attached lab stopped it")
	}
	if err := other.Restart(ctx, "idc-b"); err != nil {
		t.Fatal(err)
	}
	if err := other.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := mysqllab.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.PID("idc-b") != other.PID("idc-b") || !again.Running("idc-b") {
		t.Fatalf("lab.json does not have idc-b's new pid: %d vs %d", again.PID("idc-b"), other.PID("idc-b"))
	}
	// Close of an attached lab stops everything and removes the files.
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range lab.Servers() {
		if again.Running(name) {
			t.Errorf("%s still running after Close", name)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory left behind: %v", err)
	}
}

func TestLabKeepData(t *testing.T) {
	mysqllabtest.Require(t)
	dir := t.TempDir()
	ctx := testContext(t)
	lab, err := mysqllab.Start(ctx, mysqllab.Config{Dir: dir, KeepData: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if err := lab.CreateDatabase(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, mysqllab.StateFile)); err != nil {
		t.Fatalf("KeepData: %v", err)
	}
	// Bring it back from its data, as `cellctl lab up` does.
	back, err := mysqllab.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	back.SetLogf(t.Logf)
	t.Cleanup(func() { back.Close() })
	for _, name := range back.Servers() {
		if err := back.Restart(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := back.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range back.Servers() {
		var got string
		if err := back.DB(name).QueryRowContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'kept'").Scan(&got); err != nil {
			t.Fatalf("%s lost database kept: %v", name, err)
		}
	}
}

func TestStartNotInstalled(t *testing.T) {
	_, err := mysqllab.Start(context.Background(), mysqllab.Config{Dir: t.TempDir(), Mariadbd: "/nonexistent/mariadbd"})
	if !errors.Is(err, mysqllab.ErrNotInstalled) || !strings.Contains(err.Error(), "scripts/tools/mariadb.sh") {
		t.Fatalf("Start without mariadbd = %v, want ErrNotInstalled naming the install script", err)
	}
	if _, err := mysqllab.Start(context.Background(), mysqllab.Config{}); !errors.Is(err, mysqllab.ErrInvalidConfig) {
		t.Fatalf("Start without Dir = %v, want ErrInvalidConfig", err)
	}
}
