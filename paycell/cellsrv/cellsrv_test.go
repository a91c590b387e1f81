package cellsrv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/bank"
	"github.com/cellkit/cellkit/paycell/cellsrv"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	cluster = "paycell"
	slots   = 1024
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	return l
}

// fourCells: a1 (0-255), a2 (256-511) in IDC-A; b1, b2 in IDC-B.
func fourCells(t *testing.T) *router.Table {
	tb, err := router.NewTable(slots)
	must(t, err)
	for i, c := range []router.Cell{{ID: "a1", IDC: "IDC-A"}, {ID: "a2", IDC: "IDC-A"}, {ID: "b1", IDC: "IDC-B"}, {ID: "b2", IDC: "IDC-B"}} {
		c.State = router.StateActive
		must(t, tb.AddCell(c))
		must(t, tb.Assign(router.SlotRange{First: i * slots / 4, Last: (i+1)*slots/4 - 1}, c.ID))
	}
	return tb
}

// startRouter serves a cellrouter for the cluster and returns its URL.
func startRouter(t *testing.T, l net.Listener, store *etcdstore.Store, disc router.Discovery) string {
	t.Helper()
	cfg := gateway.DefaultConfig()
	cfg.HTTP.Routes = paycell.GatewayRoutes()
	g, err := gateway.New(cfg, gateway.Options{Source: store, Discovery: disc})
	must(t, err)
	must(t, g.Start(ctxT(t)))
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(sctx, gateway.Listeners{HTTP: l}) }()
	t.Cleanup(func() { stop(); <-served; g.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for g.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: %v", g.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "http://" + l.Addr().String()
}

// TestFourCellsThroughTheRouter runs four cells in one process behind a
// cellrouter, with a virtual bank whose callbacks come back through the
// router, under concurrent load; then checks the books of every cell and
// that money is conserved against the bank's books.
func TestFourCellsThroughTheRouter(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := etcdtest.Client(t, srv)
	store := etcdtest.Store(t, cli, cluster)
	tb, err := store.Create(ctxT(t), "paycell test", fourCells(t))
	must(t, err)
	disc, err := etcdcell.NewDiscovery(ctxT(t), cli, cluster, quiet)
	must(t, err)
	t.Cleanup(disc.Close)
	routerLis := listen(t) // serving once the cells are up
	routerURL := "http://" + routerLis.Addr().String()

	bk, err := bank.New(bank.Config{CallbackURL: routerURL, Delay: 5 * time.Millisecond, FailureRate: 0.2, Seed: 1, Backoff: 5 * time.Millisecond, Logger: quiet})
	must(t, err)
	t.Cleanup(func() { bk.Close() })

	var log admission.Log
	cells := map[string]*cellsrv.Cell{}
	for _, c := range tb.Cells() {
		cell, err := cellsrv.NewCell(ctxT(t), cellsrv.Config{
			Cluster: cluster, Cell: c.ID, Instance: c.ID + "-0", Etcd: cli,
			DSN:  "sqlite:" + filepath.Join(t.TempDir(), c.ID+".db"),
			HTTP: listen(t), GRPC: listen(t),
			Bank: bk, SettleEvery: 20 * time.Millisecond,
			Guard:   etcdcell.Local(c.ID, c.ID+"-0"),
			OnAdmit: log.Admitted, OnRelease: log.Released,
			Logger: quiet,
		})
		must(t, err)
		t.Cleanup(func() { cell.Close() })
		cells[c.ID] = cell
	}
	startRouter(t, routerLis, store, disc)
	for id, c := range cells {
		resp, err := http.Get("http://" + c.HTTPAddr() + "/healthz")
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s healthz: %d", id, resp.StatusCode)
		}
	}

	api := paycell.NewClient(routerURL, &http.Client{Timeout: 20 * time.Second})
	ctx := ctxT(t)
	var users []string
	for i := range 24 {
		users = append(users, fmt.Sprintf("u-%04d", i))
	}
	for _, u := range users {
		a, err := api.OpenAccount(ctx, paycell.OpenRequest{Owner: u, RequestID: "open"})
		must(t, err)
		if a.Cell != tb.Owner(u).ID {
			t.Fatalf("%s opened by %s, owner is %s", u, a.Cell, tb.Owner(u).ID)
		}
		for i := range 2 {
			_, err := api.TopUp(ctx, paycell.BankRequest{Owner: u, RequestID: fmt.Sprint("top", i), Amount: 500})
			must(t, err)
		}
	}
	must(t, bk.Quiet(ctx)) // the callbacks went through the router

	type paid struct{ txnID, owner string }
	var mu sync.Mutex
	var payments []paid
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for i := range 30 {
				u := users[r.IntN(len(users))]
				req := fmt.Sprintf("w%d-%d", w, i)
				if r.IntN(5) == 0 {
					_, err := api.Withdraw(ctx, paycell.BankRequest{Owner: u, RequestID: req, Amount: 1 + r.Int64N(100)})
					if err != nil && !errors.Is(err, paycell.ErrInsufficientFunds) {
						t.Errorf("withdraw: %v", err)
					}
					continue
				}
				o, err := api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: u, RequestID: "o" + req, Merchant: fmt.Sprint("shop-", r.IntN(3)), Amount: 1 + r.Int64N(200)})
				if err != nil {
					t.Errorf("order: %v", err)
					return
				}
				p, err := api.Pay(ctx, paycell.PayRequest{OrderID: o.OrderID, RequestID: "p" + req})
				if errors.Is(err, paycell.ErrInsufficientFunds) {
					continue
				}
				if err != nil {
					t.Errorf("pay: %v", err)
					return
				}
				mu.Lock()
				payments = append(payments, paid{p.TxnID, u})
				mu.Unlock()
				if r.IntN(4) == 0 {
					if _, err := api.Refund(ctx, paycell.RefundRequest{OrderID: o.OrderID, RequestID: "f" + req, Amount: 1 + r.Int64N(o.Amount)}); err != nil {
						t.Errorf("refund: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	must(t, bk.Quiet(ctx))
	for _, c := range cells {
		_, err := c.Settler().SettleOnce(ctx)
		must(t, err)
	}

	// Books: each cell balanced, every row in a slot its cell owns, every
	// acknowledged payment exactly once, in its owner's cell.
	var total paycell.Books
	for id, c := range cells {
		b, err := paycell.ReadBooks(ctx, c.Service().DB(), slots)
		must(t, err)
		if !b.OK() {
			t.Errorf("%s books: %v", id, b.Problems)
		}
		total = total.Add(b)
		rows, err := c.Service().DB().QueryContext(ctx, "SELECT DISTINCT owner FROM accounts")
		must(t, err)
		for rows.Next() {
			var owner string
			must(t, rows.Scan(&owner))
			if tb.Owner(owner).ID != id {
				t.Errorf("%s holds the account of %s, owned by %s", id, owner, tb.Owner(owner).ID)
			}
		}
		rows.Close()
	}
	for _, p := range payments {
		n := 0
		for id, c := range cells {
			var k int
			must(t, c.Service().DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM txns WHERE txn_id = ?", p.txnID).Scan(&k))
			if k > 0 && id != tb.Owner(p.owner).ID {
				t.Errorf("payment %s of %s in %s", p.txnID, p.owner, id)
			}
			n += k
		}
		if n != 1 {
			t.Errorf("payment %s found %d times", p.txnID, n)
		}
	}
	tot := bk.Totals()
	t.Logf("%d payments; bank %+v; books %+v", len(payments), tot, total)
	if tot.Rejected+tot.Dropped != 0 {
		t.Fatalf("undelivered callbacks: %+v", bk.Undelivered())
	}
	if total.Held() != -total.Clearing || -total.Clearing != tot.DeliveredDeposits-tot.DeliveredPayouts {
		t.Fatalf("money not conserved: cells hold %d, clearing %d, bank in %d out %d", total.Held(), total.Clearing, tot.DeliveredDeposits, tot.DeliveredPayouts)
	}
	if total.Unsettled != 0 || total.MerchantPending != 0 {
		t.Fatalf("unsettled after the last rounds: %+v", total)
	}
	if c := log.Conflicts(); len(c) > 0 {
		t.Fatalf("single writer broken: %v", c)
	}
	for _, c := range cells {
		must(t, c.Close())
	}
}

func TestConfigValidate(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := etcdtest.Client(t, srv)
	for _, tc := range []struct {
		name string
		cfg  cellsrv.Config
	}{
		{"no etcd", cellsrv.Config{Cell: "a1", Instance: "a1-0", DSN: "sqlite::memory:"}},
		{"no database", cellsrv.Config{Cell: "a1", Instance: "a1-0", Etcd: cli}},
		{"bad DSN", cellsrv.Config{Cell: "a1", Instance: "a1-0", Etcd: cli, DSN: "postgres://x"}},
		{"no listener", cellsrv.Config{Cell: "a1", Instance: "a1-0", Etcd: cli, DSN: "sqlite::memory:"}},
		{"bad cell", cellsrv.Config{Cell: "a 1", Instance: "a1-0", Etcd: cli, DSN: "sqlite::memory:", HTTP: listen(t)}},
	} {
		if _, err := cellsrv.NewCell(ctxT(t), tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	// A cluster without a map: registration fails, nothing is left running.
	l := listen(t)
	_, err := cellsrv.NewCell(ctxT(t), cellsrv.Config{Cluster: "nomap", Cell: "a1", Instance: "a1-0", Etcd: cli, DSN: "sqlite::memory:", HTTP: l, Logger: quiet})
	if !errors.Is(err, etcdstore.ErrNoMap) {
		t.Fatalf("no map: %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Fatalf("listener left open after a failed start")
	}
}
