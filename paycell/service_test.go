package paycell_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/router"
)

// step is one call of a scripted scenario: it returns the result to
// compare (or nil to skip the comparison) and the error.
type step struct {
	name    string
	do      func(ctx context.Context) (any, error)
	want    any   // compared with the result when not nil
	wantErr error // matched with errors.Is; nil: must succeed
}

func runSteps(t *testing.T, steps []step) {
	t.Helper()
	ctx := ctxT(t)
	for _, s := range steps {
		got, err := s.do(ctx)
		switch {
		case s.wantErr == nil && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.wantErr != nil && !errors.Is(err, s.wantErr):
			t.Fatalf("%s: error %v, want %v", s.name, err, s.wantErr)
		case s.want != nil && fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", s.want):
			t.Fatalf("%s:\n got  %+v\n want %+v", s.name, got, s.want)
		}
	}
}

// ignoreResult adapts a typed call to a step.
func call[R any](f func(ctx context.Context) (R, error)) func(ctx context.Context) (any, error) {
	return func(ctx context.Context) (any, error) { return f(ctx) }
}

func TestBadRequests(t *testing.T) {
	svc, _ := newService(t, dialects[0])
	ctx := ctxT(t)
	fund(t, svc, "u-1", 100)
	otherKind, err := router.NewID("bop", "u-1")
	must(t, err)
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"open: empty owner", func() error { _, err := svc.OpenAccount(ctx, paycell.OpenRequest{RequestID: "r"}); return err }},
		{"open: owner with a colon", func() error {
			_, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "cell:a1", RequestID: "r"})
			return err
		}},
		{"open: owner too long", func() error {
			_, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: strings.Repeat("u", 65), RequestID: "r"})
			return err
		}},
		{"open: no requestId", func() error { _, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1"}); return err }},
		{"open: requestId too long", func() error {
			_, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: strings.Repeat("r", 65)})
			return err
		}},
		{"open: requestId with a space", func() error {
			_, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "r 1"})
			return err
		}},
		{"balance: bad owner", func() error { _, err := svc.Balance(ctx, "u/1"); return err }},
		{"statement: limit too big", func() error { _, err := svc.Statement(ctx, "u-1", paycell.MaxStatementLimit+1); return err }},
		{"statement: negative limit", func() error { _, err := svc.Statement(ctx, "u-1", -1); return err }},
		{"order: zero amount", func() error {
			_, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "r", Merchant: "m1"})
			return err
		}},
		{"order: negative amount", func() error {
			_, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "r", Merchant: "m1", Amount: -5})
			return err
		}},
		{"order: amount too big", func() error {
			_, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "r", Merchant: "m1", Amount: paycell.MaxAmount + 1})
			return err
		}},
		{"order: no merchant", func() error {
			_, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "r", Amount: 5})
			return err
		}},
		{"pay: malformed orderId", func() error {
			_, err := svc.Pay(ctx, paycell.PayRequest{OrderID: "ord_123", RequestID: "r"})
			return err
		}},
		{"pay: orderId of another kind", func() error {
			_, err := svc.Pay(ctx, paycell.PayRequest{OrderID: otherKind, RequestID: "r"})
			return err
		}},
		{"refund: zero amount", func() error {
			id, _ := router.NewID("ord", "u-1")
			_, err := svc.Refund(ctx, paycell.RefundRequest{OrderID: id, RequestID: "r"})
			return err
		}},
		{"topup: zero amount", func() error { _, err := svc.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "r"}); return err }},
		{"withdraw: negative amount", func() error {
			_, err := svc.Withdraw(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "r", Amount: -1})
			return err
		}},
		{"callback: bad status", func() error {
			_, err := svc.BankCallback(ctx, paycell.CallbackRequest{OpID: otherKind, Status: "maybe"})
			return err
		}},
		{"callback: malformed opId", func() error {
			_, err := svc.BankCallback(ctx, paycell.CallbackRequest{OpID: "bop_x", Status: paycell.BankFailed})
			return err
		}},
	} {
		err := tc.do()
		if !errors.Is(err, paycell.ErrBadRequest) || paycell.CodeOf(err) != paycell.CodeBadRequest {
			t.Errorf("%s: %v, want a bad request", tc.name, err)
		}
	}
	checkBooks(t, svc)
	if b := checkBooks(t, svc); b.Users != 100 {
		t.Fatalf("bad requests moved money: users hold %d", b.Users)
	}
}

func TestOrdersPaymentsRefunds(t *testing.T) {
	forEachAPI(t, func(t *testing.T, svc *paycell.Service, _ *fakeBank, api paycell.API) {
		fund(t, api, "u-1", 0)
		var order, order2 paycell.Order
		var pay paycell.Payment
		var ref paycell.Refund
		unknown, err := router.NewID("ord", "u-1")
		must(t, err)
		runSteps(t, []step{
			{name: "order for a user without an account", wantErr: paycell.ErrNotFound, do: call(func(ctx context.Context) (paycell.Order, error) {
				return api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-nobody", RequestID: "o0", Merchant: "m1", Amount: 100})
			})},
			{name: "create order", do: call(func(ctx context.Context) (paycell.Order, error) {
				var err error
				order, err = api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o1", Merchant: "m1", Amount: 100})
				if err == nil && (order.Status != paycell.OrderCreated || order.Cell != "a1" || router.KeySlot(order.OrderID, slots) != router.KeySlot("u-1", slots)) {
					err = fmt.Errorf("order %+v: want created, served by a1, in u-1's slot", order)
				}
				return order, err
			})},
			{name: "create order retried", do: call(func(ctx context.Context) (paycell.Order, error) {
				o, err := api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o1", Merchant: "m1", Amount: 100})
				if err == nil && o != order {
					err = fmt.Errorf("retry returned %+v, first %+v", o, order)
				}
				return o, err
			})},
			{name: "requestId reused with another amount", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.Order, error) {
				return api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o1", Merchant: "m1", Amount: 101})
			})},
			{name: "requestId reused for another method", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.TopUp, error) {
				return api.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "o1", Amount: 100})
			})},
			{name: "pay an unknown order", wantErr: paycell.ErrNotFound, do: call(func(ctx context.Context) (paycell.Payment, error) {
				return api.Pay(ctx, paycell.PayRequest{OrderID: unknown, RequestID: "p0"})
			})},
			{name: "pay with an empty balance", wantErr: paycell.ErrInsufficientFunds, do: call(func(ctx context.Context) (paycell.Payment, error) {
				p, err := api.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "p1"})
				var ie *paycell.InsufficientFundsError
				if errors.As(err, &ie) && (ie.Balance != 0 || ie.Amount != 100 || ie.Owner != "u-1") {
					return p, fmt.Errorf("insufficient funds error %+v", ie)
				}
				return p, err
			})},
			{name: "refund an unpaid order", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.Refund, error) {
				return api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f0", Amount: 1})
			})},
			{name: "fund", do: func(ctx context.Context) (any, error) { fund(t, api, "u-1", 150); return nil, nil }},
			{name: "pay (the refused requestId, now funded)", do: call(func(ctx context.Context) (paycell.Payment, error) {
				var err error
				pay, err = api.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "p1"})
				if err == nil && (pay.Status != paycell.OrderPaid || pay.Balance != 50 || pay.TxnID == "") {
					err = fmt.Errorf("payment %+v", pay)
				}
				return pay, err
			})},
			{name: "pay retried", do: call(func(ctx context.Context) (paycell.Payment, error) {
				p, err := api.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "p1"})
				if err == nil && p != pay {
					err = fmt.Errorf("retry returned %+v, first %+v", p, pay)
				}
				return p, err
			})},
			{name: "pay a paid order again", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.Payment, error) {
				return api.Pay(ctx, paycell.PayRequest{OrderID: order.OrderID, RequestID: "p2"})
			})},
			{name: "balance", want: paycell.Account{Owner: "u-1", Balance: 50, Cell: "a1"}, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.Balance(ctx, "u-1")
			})},
			{name: "partial refund", do: call(func(ctx context.Context) (paycell.Refund, error) {
				var err error
				ref, err = api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f1", Amount: 30})
				if err == nil && (ref.Refunded != 30 || ref.Status != paycell.OrderPartiallyRefunded || ref.Balance != 80) {
					err = fmt.Errorf("refund %+v", ref)
				}
				return ref, err
			})},
			{name: "partial refund retried", do: call(func(ctx context.Context) (paycell.Refund, error) {
				r, err := api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f1", Amount: 30})
				if err == nil && r != ref {
					err = fmt.Errorf("retry returned %+v, first %+v", r, ref)
				}
				return r, err
			})},
			{name: "refund past the amount", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.Refund, error) {
				r, err := api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f2", Amount: 71})
				// The typed error's details are for in-process callers;
				// over HTTP it is a 409 CONFLICT.
				var re *paycell.RefundExceedsError
				if errors.As(err, &re) && (re.Refunded != 30 || re.Asked != 71 || re.Amount != 100) {
					return r, fmt.Errorf("refund error %+v", re)
				}
				return r, err
			})},
			{name: "refund the rest", do: call(func(ctx context.Context) (paycell.Refund, error) {
				r, err := api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f2", Amount: 70})
				if err == nil && (r.Refunded != 100 || r.Status != paycell.OrderRefunded || r.Balance != 150) {
					err = fmt.Errorf("refund %+v", r)
				}
				return r, err
			})},
			{name: "refund a refunded order", wantErr: paycell.ErrConflict, do: call(func(ctx context.Context) (paycell.Refund, error) {
				return api.Refund(ctx, paycell.RefundRequest{OrderID: order.OrderID, RequestID: "f3", Amount: 1})
			})},
			{name: "order read", do: call(func(ctx context.Context) (paycell.Order, error) {
				o, err := api.Order(ctx, order.OrderID)
				if err == nil && (o.Status != paycell.OrderRefunded || o.Refunded != 100) {
					err = fmt.Errorf("order %+v", o)
				}
				return o, err
			})},
			{name: "full refund at once", do: call(func(ctx context.Context) (paycell.Refund, error) {
				var err error
				order2, err = api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o2", Merchant: "m2", Amount: 150})
				if err != nil {
					return paycell.Refund{}, err
				}
				if _, err := api.Pay(ctx, paycell.PayRequest{OrderID: order2.OrderID, RequestID: "p3"}); err != nil {
					return paycell.Refund{}, err
				}
				r, err := api.Refund(ctx, paycell.RefundRequest{OrderID: order2.OrderID, RequestID: "f4", Amount: 150})
				if err == nil && (r.Status != paycell.OrderRefunded || r.Balance != 150) {
					err = fmt.Errorf("refund %+v", r)
				}
				return r, err
			})},
			{name: "statement", do: call(func(ctx context.Context) (paycell.Statement, error) {
				st, err := api.Statement(ctx, "u-1", 0)
				if err != nil {
					return st, err
				}
				var kinds []string
				var sum int64
				for _, e := range st.Entries {
					kinds = append(kinds, e.Kind)
					sum += e.Amount
				}
				want := "refund pay refund refund pay topup"
				if strings.Join(kinds, " ") != want || sum != st.Balance || st.Balance != 150 {
					return st, fmt.Errorf("statement kinds %q (want %q), sum %d, balance %d", strings.Join(kinds, " "), want, sum, st.Balance)
				}
				if lim, err := api.Statement(ctx, "u-1", 2); err != nil || len(lim.Entries) != 2 || lim.Entries[0] != st.Entries[0] {
					return st, fmt.Errorf("statement limit 2: %+v, %v", lim, err)
				}
				return st, nil
			})},
			{name: "statement of nobody", wantErr: paycell.ErrNotFound, do: call(func(ctx context.Context) (paycell.Statement, error) {
				return api.Statement(ctx, "u-nobody", 0)
			})},
		})
		b := checkBooks(t, svc)
		if b.MerchantPending != 0 || b.Users != 150 || b.Clearing != -150 || b.Paid != 250 || b.Refunded != 250 {
			t.Fatalf("books %+v", b)
		}
	})
}

func TestOpenAccount(t *testing.T) {
	forEachAPI(t, func(t *testing.T, svc *paycell.Service, _ *fakeBank, api paycell.API) {
		runSteps(t, []step{
			{name: "balance before open", wantErr: paycell.ErrNotFound, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.Balance(ctx, "u-1")
			})},
			{name: "open", want: paycell.Account{Owner: "u-1", Cell: "a1"}, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "a"})
			})},
			{name: "fund", do: func(ctx context.Context) (any, error) { fund(t, api, "u-1", 10); return nil, nil }},
			{name: "open retried: the first result", want: paycell.Account{Owner: "u-1", Cell: "a1"}, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "a"})
			})},
			{name: "open again, new requestId: the account as it is", want: paycell.Account{Owner: "u-1", Balance: 10, Cell: "a1"}, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "b"})
			})},
			{name: "requestIds are per owner", want: paycell.Account{Owner: "u-2", Cell: "a1"}, do: call(func(ctx context.Context) (paycell.Account, error) {
				return api.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-2", RequestID: "a"})
			})},
		})
		checkBooks(t, svc)
	})
}

func TestBankOperations(t *testing.T) {
	forEachAPI(t, func(t *testing.T, svc *paycell.Service, bank *fakeBank, api paycell.API) {
		fund(t, api, "u-1", 0)
		var top, top2 paycell.TopUp
		var wd, wd2 paycell.Withdrawal
		unknown, err := router.NewID("bop", "u-1")
		must(t, err)
		balance := func(want int64) step {
			return step{name: fmt.Sprintf("balance %d", want), want: paycell.Account{Owner: "u-1", Balance: want, Cell: "a1"},
				do: call(func(ctx context.Context) (paycell.Account, error) { return api.Balance(ctx, "u-1") })}
		}
		cb := func(name string, op *string, status string, wantErr error, want string) step {
			return step{name: name, wantErr: wantErr, do: call(func(ctx context.Context) (paycell.Callback, error) {
				c, err := api.BankCallback(ctx, paycell.CallbackRequest{OpID: *op, Status: status, BankRef: "ref-1"})
				if err == nil && (c.Status != want || c.OpID != *op || c.Cell != "a1") {
					err = fmt.Errorf("callback %+v, want status %s", c, want)
				}
				return c, err
			})}
		}
		runSteps(t, []step{
			{name: "top up", do: call(func(ctx context.Context) (paycell.TopUp, error) {
				var err error
				top, err = api.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "t1", Amount: 100})
				if err == nil && (top.Status != paycell.BankPending || router.KeySlot(top.OpID, slots) != router.KeySlot("u-1", slots)) {
					err = fmt.Errorf("top-up %+v", top)
				}
				return top, err
			})},
			{name: "top up retried", do: call(func(ctx context.Context) (paycell.TopUp, error) {
				r, err := api.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "t1", Amount: 100})
				if err == nil && r != top {
					err = fmt.Errorf("retry %+v, first %+v", r, top)
				}
				return r, err
			})},
			balance(0),
			cb("top-up succeeded", &top.OpID, paycell.BankSucceeded, nil, paycell.BankSucceeded),
			balance(100),
			cb("top-up callback twice", &top.OpID, paycell.BankSucceeded, nil, paycell.BankSucceeded),
			balance(100),
			cb("top-up callback contradicted", &top.OpID, paycell.BankFailed, paycell.ErrConflict, ""),
			{name: "second top up", do: call(func(ctx context.Context) (paycell.TopUp, error) {
				var err error
				top2, err = api.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "t2", Amount: 1000})
				return top2, err
			})},
			cb("top-up failed", &top2.OpID, paycell.BankFailed, nil, paycell.BankFailed),
			cb("failed top-up callback twice", &top2.OpID, paycell.BankFailed, nil, paycell.BankFailed),
			balance(100),
			{name: "withdraw too much", wantErr: paycell.ErrInsufficientFunds, do: call(func(ctx context.Context) (paycell.Withdrawal, error) {
				return api.Withdraw(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "w0", Amount: 101})
			})},
			{name: "withdraw", do: call(func(ctx context.Context) (paycell.Withdrawal, error) {
				var err error
				wd, err = api.Withdraw(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "w1", Amount: 40})
				if err == nil && (wd.Balance != 60 || wd.Status != paycell.BankPending) {
					err = fmt.Errorf("withdrawal %+v", wd)
				}
				return wd, err
			})},
			balance(60),
			cb("withdrawal failed: the money comes back", &wd.OpID, paycell.BankFailed, nil, paycell.BankFailed),
			balance(100),
			cb("failed withdrawal callback twice", &wd.OpID, paycell.BankFailed, nil, paycell.BankFailed),
			balance(100),
			{name: "withdraw again", do: call(func(ctx context.Context) (paycell.Withdrawal, error) {
				var err error
				wd2, err = api.Withdraw(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "w2", Amount: 70})
				return wd2, err
			})},
			cb("withdrawal paid out", &wd2.OpID, paycell.BankSucceeded, nil, paycell.BankSucceeded),
			cb("paid-out withdrawal callback twice", &wd2.OpID, paycell.BankSucceeded, nil, paycell.BankSucceeded),
			balance(30),
			cb("callback for an unknown operation", &unknown, paycell.BankSucceeded, paycell.ErrNotFound, ""),
		})
		b := checkBooks(t, svc)
		// 100 in, 70 out: users hold 30, the bank brought in 30 net.
		if b.Users != 30 || b.Clearing != -30 || b.Withdrawing != 0 || b.PendingTopUps != 0 || b.PendingWithdrawals != 0 || b.Held() != -b.Clearing {
			t.Fatalf("books %+v", b)
		}
		got := strings.Join(bank.submitted(), "\n")
		for _, want := range []string{top.OpID + " topup 100", top2.OpID + " topup 1000", wd.OpID + " withdraw 40", wd2.OpID + " withdraw 70"} {
			if strings.Count(got, want) != 1 {
				t.Errorf("bank submissions:\n%s\nwant %q once", got, want)
			}
		}
	})
}

func TestResubmitPending(t *testing.T) {
	svc, bank := newService(t, dialects[0])
	ctx := ctxT(t)
	fund(t, svc, "u-1", 0)
	bank.fail.Store(true)
	top, err := svc.TopUp(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "t1", Amount: 5})
	must(t, err) // the bank being down does not fail the committed top-up
	bank.fail.Store(false)
	if len(bank.submitted()) != 0 {
		t.Fatalf("submitted %v while down", bank.submitted())
	}
	n, err := svc.ResubmitPending(ctx, 0, 100)
	must(t, err)
	if n != 1 || bank.submitted()[0] != top.OpID+" topup 5" {
		t.Fatalf("resubmitted %d: %v", n, bank.submitted())
	}
	if n, err := svc.ResubmitPending(ctx, 1<<40, 100); err != nil || n != 0 {
		t.Fatalf("ops created before long ago: %d, %v", n, err)
	}
}

// TestConcurrentOpenNoDeadlock opens each of many fresh accounts from 16
// goroutines at once with a single transaction attempt, so a deadlock is not
// hidden by the retry loop: opening must take the row's exclusive lock at
// once (INSERT IGNORE's shared lock, upgraded by FOR UPDATE, deadlocked in
// nearly every round on MariaDB).
func TestConcurrentOpenNoDeadlock(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d dialect) {
		svc, _ := newService(t, d, func(c *paycell.Config) { c.TxAttempts = 1 })
		ctx := ctxT(t)
		for round := range 20 {
			owner := fmt.Sprintf("u-%d", round)
			var wg sync.WaitGroup
			errs := make([]error, 16)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = svc.OpenAccount(ctx, paycell.OpenRequest{Owner: owner, RequestID: "open"})
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	})
}

// TestConcurrentDuplicates sends the same request from many goroutines at
// once: exactly one takes effect, every caller gets its result.
func TestConcurrentDuplicates(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d dialect) {
		svc, _ := newService(t, d)
		ctx := ctxT(t)
		const n = 16
		parallel := func(f func() (string, error)) []string {
			var wg sync.WaitGroup
			out := make([]string, n)
			errs := make([]error, n)
			for i := range n {
				wg.Add(1)
				go func() { defer wg.Done(); out[i], errs[i] = f() }()
			}
			wg.Wait()
			must(t, errors.Join(errs...))
			return out
		}
		same := func(what string, rs []string) {
			t.Helper()
			for _, r := range rs {
				if r != rs[0] {
					t.Fatalf("%s: results differ: %q vs %q", what, r, rs[0])
				}
			}
		}
		same("open", parallel(func() (string, error) {
			a, err := svc.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "open"})
			return fmt.Sprint(a), err
		}))
		fund(t, svc, "u-1", 100)
		orders := parallel(func() (string, error) {
			o, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o1", Merchant: "m1", Amount: 60})
			return o.OrderID, err
		})
		same("order", orders)
		same("pay", parallel(func() (string, error) {
			p, err := svc.Pay(ctx, paycell.PayRequest{OrderID: orders[0], RequestID: "p1"})
			return fmt.Sprint(p), err
		}))
		same("refund", parallel(func() (string, error) {
			r, err := svc.Refund(ctx, paycell.RefundRequest{OrderID: orders[0], RequestID: "f1", Amount: 10})
			return fmt.Sprint(r), err
		}))
		wds := parallel(func() (string, error) {
			w, err := svc.Withdraw(ctx, paycell.BankRequest{Owner: "u-1", RequestID: "w1", Amount: 5})
			return w.OpID, err
		})
		same("withdraw", wds)
		same("callback", parallel(func() (string, error) {
			c, err := svc.BankCallback(ctx, paycell.CallbackRequest{OpID: wds[0], Status: paycell.BankFailed})
			return fmt.Sprint(c), err
		}))
		a, err := svc.Balance(ctx, "u-1")
		must(t, err)
		if a.Balance != 100-60+10 {
			t.Fatalf("balance %d, want 50: a duplicate took effect", a.Balance)
		}
		b := checkBooks(t, svc)
		if b.Txns != 1+1+1+2 { // top-up, pay, refund, withdraw + its failure
			t.Fatalf("%d transactions, want 5", b.Txns)
		}
	})
}

// TestConcurrentPaysNeverOverdraw pays many orders of one user at once:
// the balance covers only some; the rest are refused, none overdraws.
func TestConcurrentPaysNeverOverdraw(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d dialect) {
		svc, _ := newService(t, d)
		ctx := ctxT(t)
		fund(t, svc, "u-1", 100)
		const n = 12
		var ids []string
		for i := range n {
			o, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: fmt.Sprint("o", i), Merchant: "m1", Amount: 30})
			must(t, err)
			ids = append(ids, o.OrderID)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		paid, short := 0, 0
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := svc.Pay(ctx, paycell.PayRequest{OrderID: id, RequestID: fmt.Sprint("p", i)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					paid++
				case errors.Is(err, paycell.ErrInsufficientFunds):
					short++
				default:
					t.Errorf("pay: %v", err)
				}
			}()
		}
		wg.Wait()
		if paid != 3 || short != n-3 {
			t.Fatalf("%d paid, %d refused; want 3 and %d", paid, short, n-3)
		}
		if a, _ := svc.Balance(ctx, "u-1"); a.Balance != 10 {
			t.Fatalf("balance %d, want 10", a.Balance)
		}
		checkBooks(t, svc)
	})
}

func TestConfigValidate(t *testing.T) {
	db, dl := openSQLite(t)
	for _, tc := range []struct {
		name string
		edit func(*paycell.Config)
	}{
		{"no cell", func(c *paycell.Config) { c.Cell = "" }},
		{"bad cell", func(c *paycell.Config) { c.Cell = "a 1" }},
		{"slot count not a power of two", func(c *paycell.Config) { c.SlotCount = 1000 }},
		{"no slot count", func(c *paycell.Config) { c.SlotCount = 0 }},
		{"no db", func(c *paycell.Config) { c.DB = nil }},
		{"unknown dialect", func(c *paycell.Config) { c.Dialect = "postgres" }},
		{"statement limit", func(c *paycell.Config) { c.StatementLimit = paycell.MaxStatementLimit + 1 }},
		{"tx attempts", func(c *paycell.Config) { c.TxAttempts = -1 }},
	} {
		cfg := paycell.DefaultConfig("a1", slots, db, dl)
		tc.edit(&cfg)
		if _, err := paycell.New(cfg); !errors.Is(err, paycell.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", tc.name, err)
		}
	}
	if err := paycell.DefaultConfig("a1", slots, db, dl).Validate(); err != nil {
		t.Fatal(err)
	}
}
