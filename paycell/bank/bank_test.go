package bank_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/paycell/bank"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// cells is a callback receiver that answers from a script, then 200.
type cells struct {
	mu     sync.Mutex
	script []int // statuses to answer, in order
	got    []string
	srv    *httptest.Server
}

func newCells(t *testing.T, script ...int) *cells {
	c := &cells{script: script}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Status, BankRef string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.got = append(c.got, r.Method+" "+r.URL.Path+" "+body.Status)
		if len(c.script) > 0 {
			code := c.script[0]
			c.script = c.script[1:]
			w.WriteHeader(code)
			return
		}
		fmt.Fprintf(w, `{"opId":%q,"status":%q,"cell":"a1"}`, r.URL.Path, body.Status)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cells) calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func newBank(t *testing.T, url string, edit ...func(*bank.Config)) *bank.Bank {
	t.Helper()
	cfg := bank.Config{CallbackURL: url, Delay: time.Millisecond, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: quiet}
	for _, f := range edit {
		f(&cfg)
	}
	b, err := bank.New(cfg)
	must(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func TestDecisionsAreDeterministic(t *testing.T) {
	c := newCells(t)
	outcomes := func(seed uint64, rate float64) string {
		b := newBank(t, c.srv.URL, func(cfg *bank.Config) { cfg.Seed, cfg.FailureRate, cfg.Delay = seed, rate, -1 })
		var s []byte
		for i := range 200 {
			id := fmt.Sprintf("bop_%d", i)
			must(t, b.Submit(ctxT(t), id, bank.KindTopUp, 1))
			op, _ := b.Op(id)
			s = append(s, op.Status[0])
		}
		must(t, b.Quiet(ctxT(t)))
		return string(s)
	}
	a, b := outcomes(7, 0.5), outcomes(7, 0.5)
	if a != b {
		t.Fatalf("same seed, different outcomes:\n%s\n%s", a, b)
	}
	if outcomes(8, 0.5) == a {
		t.Fatalf("another seed gave the same 200 outcomes")
	}
	for rate, want := range map[float64]byte{0: 's', 1: 'f'} {
		for _, o := range []byte(outcomes(7, rate)) {
			if o != want {
				t.Fatalf("failure rate %v gave %q", rate, o)
			}
		}
	}
}

func TestDeliveryRetriesUntilAcknowledged(t *testing.T) {
	c := newCells(t, 503, 421, 500, 429)
	b := newBank(t, c.srv.URL)
	ctx := ctxT(t)
	must(t, b.Submit(ctx, "bop_1", bank.KindTopUp, 100))
	must(t, b.Submit(ctx, "bop_1", bank.KindTopUp, 100)) // idempotent
	must(t, b.Quiet(ctx))
	op, _ := b.Op("bop_1")
	if op.Delivery != bank.DeliveryDone || op.Attempts != 5 || op.Cell != "a1" || op.Status != bank.StatusSucceeded || op.BankRef == "" {
		t.Fatalf("op %+v", op)
	}
	calls := c.calls()
	if len(calls) != 5 || calls[0] != "POST /v1/bank/callbacks/bop_1 succeeded" {
		t.Fatalf("callbacks %v", calls)
	}
	tot := b.Totals()
	if tot.Deposits != 100 || tot.DeliveredDeposits != 100 || tot.Delivered != 1 || tot.Ops != 1 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestRejectedAndDroppedAreCountedAndRedelivered(t *testing.T) {
	c := newCells(t, 404, 503, 503, 503)
	b := newBank(t, c.srv.URL, func(cfg *bank.Config) { cfg.MaxAttempts = 3 })
	ctx := ctxT(t)
	must(t, b.Submit(ctx, "bop_1", bank.KindWithdraw, 30)) // 404: rejected at once
	must(t, b.Quiet(ctx))
	must(t, b.Submit(ctx, "bop_2", bank.KindWithdraw, 20)) // 503 x3: dropped
	must(t, b.Quiet(ctx))
	tot := b.Totals()
	if tot.Rejected != 1 || tot.Dropped != 1 || tot.Payouts != 50 || tot.DeliveredPayouts != 0 {
		t.Fatalf("totals %+v", tot)
	}
	if u := b.Undelivered(); len(u) != 2 || u[0].Delivery != bank.DeliveryRejected || u[0].LastError != "HTTP 404" || u[1].Attempts != 3 {
		t.Fatalf("undelivered %+v", u)
	}
	// Submitting again restarts one; Redeliver the rest.
	must(t, b.Submit(ctx, "bop_1", bank.KindWithdraw, 30))
	if n := b.Redeliver(); n != 1 {
		t.Fatalf("redelivered %d, want 1", n)
	}
	must(t, b.Quiet(ctx))
	tot = b.Totals()
	if tot.Delivered != 2 || tot.DeliveredPayouts != 50 || tot.Rejected+tot.Dropped != 0 {
		t.Fatalf("totals after redelivery %+v", tot)
	}
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	b := newBank(t, url, func(cfg *bank.Config) { cfg.MaxAttempts = 4 })
	must(t, b.Submit(ctxT(t), "bop_1", bank.KindTopUp, 5))
	must(t, b.Quiet(ctxT(t)))
	op, _ := b.Op("bop_1")
	if op.Delivery != bank.DeliveryDropped || op.Attempts != 4 || op.LastError == "" {
		t.Fatalf("op %+v", op)
	}
}

func TestSubmitChecks(t *testing.T) {
	b := newBank(t, newCells(t).srv.URL, func(cfg *bank.Config) { cfg.Delay = time.Hour })
	ctx := ctxT(t)
	for _, tc := range []struct {
		id, kind string
		amount   int64
		want     error
	}{
		{"", bank.KindTopUp, 1, bank.ErrBadOp},
		{"a/b", bank.KindTopUp, 1, bank.ErrBadOp},
		{"op", "deposit", 1, bank.ErrBadOp},
		{"op", bank.KindTopUp, 0, bank.ErrBadOp},
		{"op", bank.KindTopUp, 5, nil},
		{"op", bank.KindTopUp, 5, nil},
		{"op", bank.KindTopUp, 6, bank.ErrConflict},
		{"op", bank.KindWithdraw, 5, bank.ErrConflict},
	} {
		if err := b.Submit(ctx, tc.id, tc.kind, tc.amount); !errors.Is(err, tc.want) {
			t.Errorf("Submit(%q, %q, %d) = %v, want %v", tc.id, tc.kind, tc.amount, err, tc.want)
		}
	}
	if tot := b.Totals(); tot.Undecided != 1 {
		t.Fatalf("totals %+v", tot)
	}
	must(t, b.Close()) // an undecided operation's timer is stopped
	if err := b.Submit(ctx, "op2", bank.KindTopUp, 1); !errors.Is(err, bank.ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []bank.Config{
		{},
		{CallbackURL: "router:8080"},
		{CallbackURL: "http://r", FailureRate: 1.5},
		{CallbackURL: "http://r", MaxAttempts: -1},
		{CallbackURL: "http://r", Backoff: time.Second, MaxBackoff: time.Millisecond},
	} {
		if _, err := bank.New(cfg); !errors.Is(err, bank.ErrBadConfig) {
			t.Errorf("New(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
}

func TestHTTPServer(t *testing.T) {
	c := newCells(t)
	b := newBank(t, c.srv.URL)
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(srv.Close)
	cl := bank.NewClient(srv.URL, nil)
	ctx := ctxT(t)
	must(t, cl.Submit(ctx, "bop_1", bank.KindTopUp, 7))
	must(t, cl.Submit(ctx, "bop_1", bank.KindTopUp, 7))
	if err := cl.Submit(ctx, "bop_1", bank.KindTopUp, 8); !errors.Is(err, bank.ErrConflict) {
		t.Fatalf("conflicting submit: %v", err)
	}
	if err := cl.Submit(ctx, "bop_2", "x", 8); !errors.Is(err, bank.ErrBadOp) {
		t.Fatalf("bad submit: %v", err)
	}
	must(t, b.Quiet(ctx))
	tot, err := cl.Totals(ctx)
	must(t, err)
	if tot.DeliveredDeposits != 7 || tot.Ops != 1 {
		t.Fatalf("totals %+v", tot)
	}
	resp, err := http.Get(srv.URL + "/v1/ops/bop_1")
	must(t, err)
	var op bank.Op
	must(t, json.NewDecoder(resp.Body).Decode(&op))
	resp.Body.Close()
	if op.ID != "bop_1" || op.Delivery != bank.DeliveryDone {
		t.Fatalf("op %+v", op)
	}
}
