package lab

import (
	"context"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
)

// TestStagedMoveUnderPaymentsMariaDBGTID runs the move there and back on
// two MariaDB servers (IDC-A's cells on one, IDC-B's on the other)
// replicating to each other with GTID and semi-sync; the mysql-gtid mover
// refuses to flip unless semi-sync is on and the target has caught up.
func TestStagedMoveUnderPaymentsMariaDBGTID(t *testing.T) {
	db := mysqllabtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := db.CreateDatabase(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	l, err := Start(ctx, Config{Dir: t.TempDir(), SlotCount: 256, Mover: MoverGTID, Replicated: true, RequireSemiSync: true,
		DSN: func(cell string) string {
			if cell[0] == 'a' {
				return db.DSN("idc-a", "pay")
			}
			return db.DSN("idc-b", "pay")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	runMoveAndBack(ctx, t, l, "1/256,1/8,1/2,1")
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStagedMoveUnderPaymentsMariaDBCopy runs it with the copy mover, each
// cell with its own database on one MariaDB server.
func TestStagedMoveUnderPaymentsMariaDBCopy(t *testing.T) {
	db := mysqllabtest.Start(t, func(c *mysqllab.Config) { c.Servers, c.Async = []string{"idc-a"}, true })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, c := range []string{"a1", "a2", "b1", "b2"} {
		if err := db.CreateDatabase(ctx, "cell_"+c); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Start(ctx, Config{Dir: t.TempDir(), SlotCount: 256, DSN: func(cell string) string { return db.DSN("idc-a", "cell_"+cell) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	runMoveAndBack(ctx, t, l, "1/8,1")
}
