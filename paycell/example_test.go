package paycell_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
)

func Example() {
	ctx := context.Background()
	db, dialect, err := sqldb.Open(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := schema.Migrate(ctx, db, dialect); err != nil {
		panic(err)
	}
	svc, err := paycell.New(paycell.Config{Cell: "a1", SlotCount: 1024, DB: db, Dialect: dialect})
	if err != nil {
		panic(err)
	}

	_, _ = svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-42", RequestID: "open-1"})
	// A top-up is pending until the bank's callback says it succeeded.
	top, _ := svc.TopUp(ctx, paycell.BankRequest{Owner: "u-42", RequestID: "top-1", Amount: 100})
	_, _ = svc.BankCallback(ctx, paycell.CallbackRequest{OpID: top.OpID, Status: paycell.BankSucceeded})

	order, _ := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-42", RequestID: "ord-1", Merchant: "coffee", Amount: 70})
	pay, _ := svc.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "pay-1"})
	fmt.Println("paid:", pay.Status, "balance", pay.Balance, "served by", pay.Cell)

	again, _ := svc.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "pay-1"})
	fmt.Println("retry returns the first result:", again == pay)

	order2, _ := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-42", RequestID: "ord-2", Merchant: "coffee", Amount: 70})
	_, err = svc.Pay(ctx, paycell.PayRequest{OrderID: order2.OrderID, RequestID: "pay-2"})
	fmt.Println(errors.Is(err, paycell.ErrInsufficientFunds), paycell.CodeOf(err), paycell.CodeOf(err).HTTPStatus())

	books, _ := paycell.ReadBooks(ctx, db, 1024)
	fmt.Println("legs sum to", books.Sum, "user balances", books.Balances, "merchant pending", books.MerchantPending)
	// Output:
	// paid: paid balance 30 served by a1
	// retry returns the first result: true
	// true INSUFFICIENT_FUNDS 402
	// legs sum to 0 user balances 30 merchant pending 70
}
