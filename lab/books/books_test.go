package books

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/lab/load"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// TestCheckHasTeeth: real books pass; a tampered leg, a missing
// acknowledged payment and a bank that disagrees each fail their
// invariant.
func TestCheckHasTeeth(t *testing.T) {
	ctx := context.Background()
	tb, err := router.NewTable(256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.AddCell(router.Cell{ID: "a1", IDC: "A", State: router.StateActive}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1"); err != nil {
		t.Fatal(err)
	}
	db, d, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "a1.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := schema.Migrate(ctx, db, d); err != nil {
		t.Fatal(err)
	}
	svc, err := paycell.New(paycell.DefaultConfig("a1", 256, db, d))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u1", RequestID: "o1"}); err != nil {
		t.Fatal(err)
	}
	top, err := svc.TopUp(ctx, paycell.BankRequest{Owner: "u1", RequestID: "t1", Amount: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.BankCallback(ctx, paycell.CallbackRequest{OpID: top.OpID, Status: "succeeded"}); err != nil {
		t.Fatal(err)
	}
	in := Input{Databases: []Database{{Name: "a1", DB: db, Cells: []string{"a1"}}}, Table: tb, BankIn: 1000}
	failed := func(in Input) map[string]bool {
		t.Helper()
		rep, err := Check(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, i := range rep.Failed() {
			out[i.Name[:12]] = true
		}
		return out
	}
	if f := failed(in); len(f) != 0 {
		t.Fatalf("real books fail %v", f)
	}
	bad := in
	bad.BankIn = 999
	if f := failed(bad); !f["money is con"] {
		t.Errorf("a bank that disagrees: failed %v", f)
	}
	lost := in
	lost.Acks = []load.Ack{{Op: load.OpPay, RequestID: "never-written", Owner: "u1", Amount: 5}}
	if f := failed(lost); !f["every acknow"] {
		t.Errorf("a lost acknowledged payment: failed %v", f)
	}
	if _, err := db.ExecContext(ctx, "UPDATE entries SET amount = amount + 1 WHERE account = 'user:u1'"); err != nil {
		t.Fatal(err)
	}
	if f := failed(in); !f["the ledger b"] {
		t.Errorf("a tampered leg: failed %v", f)
	}
}
