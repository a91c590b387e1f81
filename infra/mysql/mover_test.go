package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// testTimeout bounds every wait; the tests poll, never sleep.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// books is a lab with the "pay" database and an accounts table on both
// servers; cells a1 and a2 live on idc-a, b1 on idc-b.
type books struct {
	lab  *mysqllab.Lab
	a, b *sql.DB // "pay" on idc-a and idc-b
}

func startBooks(t *testing.T) *books {
	t.Helper()
	lab := mysqllabtest.Start(t)
	ctx := testContext(t)
	if err := lab.CreateDatabase(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	bk := &books{lab: lab, a: openCell(t, lab, "idc-a"), b: openCell(t, lab, "idc-b")}
	exec(t, bk.a, "CREATE TABLE accounts (owner VARCHAR(64) PRIMARY KEY, slot INT NOT NULL, balance BIGINT NOT NULL)")
	if err := lab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return bk
}

// openCell opens "pay" on server from the lab's DSN, as a cell would.
func openCell(t *testing.T, lab *mysqllab.Lab, server string) *sql.DB {
	t.Helper()
	dsn, err := sqldb.ParseDSN(lab.DSN(server, "pay"))
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

// write inserts n accounts for owner prefix at db, one transaction each.
func write(t *testing.T, db *sql.DB, prefix string, n int) {
	t.Helper()
	for i := range n {
		owner := fmt.Sprintf("%s-%04d", prefix, i)
		exec(t, db, "INSERT INTO accounts VALUES (?, ?, ?)", owner, router.KeySlot(owner, 1024), 100*i)
	}
}

func count(t *testing.T, db *sql.DB, prefix string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(testContext(t), "SELECT COUNT(*) FROM accounts WHERE owner LIKE ?", prefix+"-%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (bk *books) mover(t *testing.T, configure func(*mysql.Config)) *mysql.Mover {
	t.Helper()
	cfg := mysql.Config{Cells: map[string]mysql.Cell{
		"a1": {Server: "idc-a", DSN: bk.lab.DSN("idc-a", "pay")},
		"a2": {Server: "idc-a", DSN: bk.lab.DSN("idc-a", "pay")},
		"b1": {Server: "idc-b", DSN: bk.lab.DSN("idc-b", "pay")},
	}}
	if configure != nil {
		configure(&cfg)
	}
	m, err := mysql.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func move(from, to string) failover.Movement {
	return failover.Movement{Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: 0, Last: 511}, From: from, To: to}}}
}

func TestWaitDataRowsAtTarget(t *testing.T) {
	bk := startBooks(t)
	m := bk.mover(t, func(c *mysql.Config) { c.RequireSemiSync = true })
	if m.Name() != "mysql-gtid" {
		t.Fatalf("Name = %q", m.Name())
	}
	ctx := testContext(t)

	// a1 writes at idc-a; once the gate passes, idc-b has every row
	// without anyone waiting for replication some other way.
	write(t, bk.a, "ua", 200)
	desc, err := m.WaitData(ctx, "c1", move("a1", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(desc)
	if n := count(t, bk.b, "ua"); n != 200 {
		t.Fatalf("idc-b has %d of a1's 200 rows when WaitData returned", n)
	}
	if !strings.HasPrefix(desc, "b1 (idc-b) reached a1's GTID 1-1-") && !strings.HasPrefix(desc, "b1 (idc-b) already had a1's GTID 1-1-") {
		t.Errorf("description %q", desc)
	}

	// And back, with key moves in the same movement: one wait per pair of
	// servers, naming all cells.
	write(t, bk.b, "ub", 50)
	back := failover.Movement{
		Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: 0, Last: 511}, From: "b1", To: "a1"}},
		Keys:  []failover.KeyMove{{Key: "u-7", From: "b1", To: "a2"}},
	}
	desc, err = m.WaitData(ctx, "c1", back)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(desc)
	if n := count(t, bk.a, "ub"); n != 50 {
		t.Fatalf("idc-a has %d of b1's 50 rows when WaitData returned", n)
	}
	if !strings.HasPrefix(desc, "a1,a2 (idc-a) ") || !strings.Contains(desc, "b1's GTID 2-2-") || strings.Contains(desc, ";") {
		t.Errorf("description %q: want one wait of a1,a2 (idc-a) for b1's domain 2", desc)
	}
}

func TestWaitDataRefusesWhileTargetLags(t *testing.T) {
	bk := startBooks(t)
	m := bk.mover(t, func(c *mysql.Config) {
		c.RequireSemiSync = true
		c.Timeout = 300 * time.Millisecond
	})
	ctx := testContext(t)
	// idc-b receives (and acknowledges, so semi-sync holds) but does not
	// apply.
	exec(t, bk.lab.DB("idc-b"), "STOP SLAVE 'idc-a' SQL_THREAD")
	write(t, bk.a, "ua", 20)

	_, err := m.WaitData(ctx, "c1", move("a1", "b1"))
	var le *mysql.LagError
	if !errors.Is(err, mysql.ErrLagging) || !errors.As(err, &le) {
		t.Fatalf("WaitData while idc-b lags = %v, want a *LagError", err)
	}
	t.Log(err)
	if !strings.Contains(le.TargetReplication, "from idc-a: IO Yes, SQL No") {
		t.Errorf("LagError.TargetReplication %q does not say the SQL thread is stopped", le.TargetReplication)
	}
	if le.Source != "a1" || le.Target != "b1" || le.SourceServer != "idc-a" || le.TargetServer != "idc-b" {
		t.Errorf("LagError names %+v", le)
	}
	src, _ := mysql.ParsePos(le.SourcePos)
	dst, _ := mysql.ParsePos(le.TargetPos)
	if g, ok := src.Domain(1); !ok || dst.Covers(mysql.Pos{g}) {
		t.Errorf("LagError positions: source %q, target %q: want the target behind in domain 1", le.SourcePos, le.TargetPos)
	}
	if n := count(t, bk.b, "ua"); n == 20 {
		t.Fatal("idc-b applied the rows with its SQL thread stopped")
	}

	exec(t, bk.lab.DB("idc-b"), "START SLAVE 'idc-a' SQL_THREAD")
	m2 := bk.mover(t, func(c *mysql.Config) { c.RequireSemiSync = true })
	desc, err := m2.WaitData(ctx, "c1", move("a1", "b1"))
	if err != nil {
		t.Fatalf("WaitData after idc-b caught up: %v", err)
	}
	t.Log(desc)
	if n := count(t, bk.b, "ua"); n != 20 {
		t.Fatalf("idc-b has %d of 20 rows after the gate passed", n)
	}
}

func TestWaitDataRefusesWithoutSemiSync(t *testing.T) {
	bk := startBooks(t)
	ctx := testContext(t)
	strict := bk.mover(t, func(c *mysql.Config) { c.RequireSemiSync = true })
	lax := bk.mover(t, nil)

	if err := bk.lab.SetSemiSync(ctx, "idc-a", false); err != nil {
		t.Fatal(err)
	}
	write(t, bk.a, "ua", 5)
	_, err := strict.WaitData(ctx, "c1", move("a1", "b1"))
	var se *mysql.SemiSyncError
	if !errors.Is(err, mysql.ErrSemiSyncOff) || !errors.As(err, &se) {
		t.Fatalf("WaitData with semi-sync off at the source = %v, want a *SemiSyncError", err)
	}
	t.Log(err)
	if se.Server != "idc-a" || se.Cell != "a1" || se.Role != "source" || se.Off != "rpl_semi_sync_master_enabled" {
		t.Errorf("SemiSyncError %+v", se)
	}
	// The other direction is still semi-synchronous.
	if _, err := strict.WaitData(ctx, "c1", move("b1", "a1")); err != nil {
		t.Fatalf("b1 -> a1 with semi-sync on at idc-b: %v", err)
	}
	// Without RequireSemiSync the gate only waits.
	if _, err := lax.WaitData(ctx, "c1", move("a1", "b1")); err != nil {
		t.Fatalf("without RequireSemiSync: %v", err)
	}

	// Back on, then off at the target as replica.
	if err := bk.lab.SetSemiSync(ctx, "idc-a", true); err != nil {
		t.Fatal(err)
	}
	if _, err := strict.WaitData(ctx, "c1", move("a1", "b1")); err != nil {
		t.Fatalf("semi-sync back on: %v", err)
	}
	// Nothing is written at idc-a below: its commits would wait (1h) for
	// an acknowledgement idc-b no longer sends.
	for _, stmt := range []string{"STOP ALL SLAVES", "SET GLOBAL rpl_semi_sync_slave_enabled = OFF", "START ALL SLAVES"} {
		exec(t, bk.lab.DB("idc-b"), stmt)
	}
	_, err = strict.WaitData(ctx, "c1", move("a1", "b1"))
	if !errors.As(err, &se) || se.Server != "idc-b" || se.Role != "target" || se.Off != "rpl_semi_sync_slave_enabled" {
		t.Fatalf("WaitData with semi-sync off at the target = %v, want a target *SemiSyncError", err)
	}
	t.Log(err)
	for _, stmt := range []string{"STOP ALL SLAVES", "SET GLOBAL rpl_semi_sync_slave_enabled = ON", "START ALL SLAVES"} {
		exec(t, bk.lab.DB("idc-b"), stmt)
	}
	if err := bk.lab.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWaitDataSameServer(t *testing.T) {
	bk := startBooks(t)
	m := bk.mover(t, func(c *mysql.Config) { c.RequireSemiSync = true })
	ctx := testContext(t)
	// Even with the other server gone: a move within idc-a waits for no
	// one.
	if err := bk.lab.Kill("idc-b"); err != nil {
		t.Fatal(err)
	}
	desc, err := m.WaitData(ctx, "c1", move("a1", "a2"))
	if err != nil {
		t.Fatal(err)
	}
	if desc != "a1 -> a2: same server idc-a, nothing to wait for" {
		t.Errorf("description %q", desc)
	}
	if desc, err := m.WaitData(ctx, "c1", failover.Movement{}); err != nil || desc == "" {
		t.Errorf("empty movement: %q, %v", desc, err)
	}
	if _, err := m.WaitData(ctx, "c1", move("a1", "z9")); !errors.Is(err, mysql.ErrUnknownCell) {
		t.Errorf("unknown target cell: %v, want ErrUnknownCell", err)
	}
}

func TestWaitDataDrainIfSourceDown(t *testing.T) {
	bk := startBooks(t)
	ctx := testContext(t)
	drain := bk.mover(t, func(c *mysql.Config) {
		c.RequireSemiSync = true
		c.DrainIfSourceDown = true
		c.Timeout = 300 * time.Millisecond
		c.SourceTimeout = time.Second
	})
	strict := bk.mover(t, func(c *mysql.Config) { c.SourceTimeout = time.Second })

	// idc-b receives a1's last writes but has not applied them when idc-a
	// is lost.
	exec(t, bk.lab.DB("idc-b"), "STOP SLAVE 'idc-a' SQL_THREAD")
	write(t, bk.a, "ua", 30)
	if err := bk.lab.Kill("idc-a"); err != nil {
		t.Fatal(err)
	}

	_, err := strict.WaitData(ctx, "c1", move("a1", "b1"))
	var ue *mysql.UnreachableError
	if !errors.Is(err, mysql.ErrSourceUnreachable) || !errors.As(err, &ue) || ue.Server != "idc-a" {
		t.Fatalf("WaitData with the source down, no drain = %v, want an *UnreachableError for idc-a", err)
	}
	t.Log(err)

	// Draining waits for what idc-b received: not applied yet, so it lags.
	_, err = drain.WaitData(ctx, "c1", move("a1", "b1"))
	var le *mysql.LagError
	if !errors.As(err, &le) || !le.SourceDown {
		t.Fatalf("drain with the SQL thread stopped = %v, want a *LagError with SourceDown", err)
	}
	t.Log(err)

	exec(t, bk.lab.DB("idc-b"), "START SLAVE 'idc-a' SQL_THREAD")
	desc, err := drain.WaitData(ctx, "c1", move("a1", "b1"))
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	t.Log(desc)
	if n := count(t, bk.b, "ua"); n != 30 {
		t.Fatalf("idc-b has %d of a1's 30 acknowledged rows after the drain", n)
	}
	for _, want := range []string{"source a1 (idc-a) unreachable", `severed and drained replication connection "idc-a"`, "received GTID 1-1-",
		"semi-sync could not be confirmed on the unreachable source"} {
		if !strings.Contains(desc, want) {
			t.Errorf("description %q does not say %q", desc, want)
		}
	}
	// The lost source is severed: idc-b no longer receives from it, so a
	// source that comes back (or was only cut off) cannot send writes
	// its cells made after they lost their slots.
	rs, err := mysql.ReadReplicas(ctx, bk.lab.DB("idc-b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Connection == "idc-a" && r.IORunning != "No" {
			t.Errorf("idc-b still receives from idc-a after the drain (IO thread %s)", r.IORunning)
		}
	}
	// The survivor takes writes again once it stops waiting for the lost
	// peer's acknowledgements.
	if err := bk.lab.SetSemiSync(ctx, "idc-b", false); err != nil {
		t.Fatal(err)
	}
	write(t, bk.b, "ub", 3)
}

func TestConfigValidate(t *testing.T) {
	db := &sql.DB{}
	tests := []struct {
		name string
		cfg  mysql.Config
		want string
	}{
		{"dsn", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DSN: "mysql://root@127.0.0.1:3306/pay"}}}, ""},
		{"db with server", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DB: db, Server: "idc-a"}}}, ""},
		{"no cells", mysql.Config{}, "Cells is empty"},
		{"empty cell id", mysql.Config{Cells: map[string]mysql.Cell{"": {DSN: "mysql://root@h:1/pay"}}}, "empty ID"},
		{"nothing", mysql.Config{Cells: map[string]mysql.Cell{"a1": {}}}, "DSN or DB is required"},
		{"both", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DB: db, DSN: "mysql://root@h:1/pay", Server: "s"}}}, "exclusive"},
		{"db without server", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DB: db}}}, "Server is required"},
		{"sqlite", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DSN: "sqlite:/tmp/a1.db"}}}, "not a MySQL"},
		{"bad dsn", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DSN: "postgres://x"}}}, "bad DSN"},
		{"negative timeout", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DSN: "mysql://root@h:1/pay"}}, Timeout: -1}, "Timeout"},
		{"negative source timeout", mysql.Config{Cells: map[string]mysql.Cell{"a1": {DSN: "mysql://root@h:1/pay"}}, SourceTimeout: -1}, "SourceTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, mysql.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
			if _, err := mysql.New(tt.cfg); !errors.Is(err, mysql.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
