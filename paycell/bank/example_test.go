package bank_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/cellkit/cellkit/paycell/bank"
)

func Example() {
	// Where callbacks go: normally the cellrouter; here a stand-in cell.
	cell := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("callback:", r.Method, r.URL.Path)
		fmt.Fprint(w, `{"cell":"a1"}`)
	}))
	defer cell.Close()

	b, err := bank.New(bank.Config{CallbackURL: cell.URL, Delay: -1}) // decide at once
	if err != nil {
		panic(err)
	}
	defer b.Close()
	ctx := context.Background()
	_ = b.Submit(ctx, "bop_1", bank.KindTopUp, 500)
	_ = b.Submit(ctx, "bop_1", bank.KindTopUp, 500) // idempotent
	_ = b.Quiet(ctx)

	op, _ := b.Op("bop_1")
	t := b.Totals()
	fmt.Println(op.Status, op.Delivery, "to", op.Cell)
	fmt.Println("deposits", t.Deposits, "delivered", t.DeliveredDeposits)
	// Output:
	// callback: POST /v1/bank/callbacks/bop_1
	// succeeded delivered to a1
	// deposits 500 delivered 500
}
