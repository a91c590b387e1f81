package sqlmove_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellkit/cellkit/clock/clocktest"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/infra/sqlmove"
	"github.com/cellkit/cellkit/router"
)

// Two cells with an accounts table each; slots 0-3 move from a1 to b1:
// freeze, copy and verify, flip, prune.
func Example() {
	ctx := context.Background()
	cells := map[string]sqlmove.DB{}
	for _, id := range []string{"a1", "b1"} {
		db, d, err := sqldb.Open(ctx, "sqlite::memory:")
		if err != nil {
			panic(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "CREATE TABLE accounts (owner TEXT PRIMARY KEY, slot INTEGER NOT NULL, balance INTEGER NOT NULL)"); err != nil {
			panic(err)
		}
		cells[id] = sqlmove.DB{DB: db, Dialect: d}
	}
	// The map: a1 owns slots 0-127, b1 128-255.
	tb, _ := router.NewTable(256)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive})
	_ = tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B", State: router.StateActive})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 127}, "a1")
	_ = tb.Assign(router.SlotRange{First: 128, Last: 255}, "b1")
	// Users of a1 in slots 0-3 and 4.
	n := 0
	for i := 0; n < 4; i++ {
		if key := fmt.Sprint("user-", i); router.Slot(key, 256) <= 4 {
			_, _ = cells["a1"].DB.ExecContext(ctx, "INSERT INTO accounts VALUES (?, ?, ?)", key, router.Slot(key, 256), 100*i)
			n++
		}
	}

	var current *router.Table
	edit := func(op failover.ChangeOp, mv failover.Movement) {
		next := tb.Clone()
		if err := (failover.Change{Op: op, Cutover: "cut-1", Move: mv}).Apply(next); err != nil {
			panic(err)
		}
		tb = next
		current = next.Clone().Seal()
	}
	mover, err := sqlmove.New(sqlmove.Config{
		Cells:  cells,
		Tables: []sqlmove.Table{{Name: "accounts", Key: []string{"owner"}}},
		Table:  func(context.Context) (*router.Table, error) { return current, nil },
		Clock:  clocktest.New(time.Unix(0, 0)), // "in 0s" below
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	mv := failover.Movement{Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: 0, Last: 3}, From: "a1", To: "b1"}}}
	edit(failover.OpFreeze, mv)
	how, err := mover.WaitData(ctx, "cut-1", mv)
	fmt.Println(how, err)
	edit(failover.OpFlip, mv)
	how, err = mover.Prune(ctx, "cut-1", current)
	fmt.Println(how, err)
	how, err = mover.Prune(ctx, "cut-1", current)
	fmt.Printf("again: %q %v\n", how, err)
	// Output:
	// copied 2 rows of 4 slots a1→b1 in 0s, verified <nil>
	// pruned 2 rows of 2 slots from a1; 1 copy fully pruned <nil>
	// again: "" <nil>
}
