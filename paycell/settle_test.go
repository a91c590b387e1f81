package paycell_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/router"
)

var clusters atomic.Int64

// cluster is a map in the shared etcd (a1 owns slots 0-511, b1 the rest)
// and a registered guard instance per cell.
type cluster struct {
	name  string
	store *etcdstore.Store
	inst  map[string]*etcdcell.Instance
}

func newCluster(t *testing.T, cells ...string) *cluster {
	t.Helper()
	return newClusterWith(t, etcdtest.TwoCellMap(t, slots), cells...)
}

// oneCellMap: a1 owns every slot; b1 exists and owns none.
func oneCellMap(t *testing.T) *router.Table {
	t.Helper()
	tb, err := router.NewTable(slots)
	must(t, err)
	must(t, tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive}))
	must(t, tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B", State: router.StateActive}))
	must(t, tb.Assign(router.SlotRange{First: 0, Last: slots - 1}, "a1"))
	return tb
}

// newClusterWith creates the map tb and registers an instance per cell.
func newClusterWith(t *testing.T, tb *router.Table, cells ...string) *cluster {
	t.Helper()
	cli := etcd.Client(t)
	c := &cluster{name: fmt.Sprintf("paycell-%d", clusters.Add(1)), inst: map[string]*etcdcell.Instance{}}
	c.store = etcdtest.Store(t, cli, c.name)
	_, err := c.store.Create(ctxT(t), "paycell test", tb)
	must(t, err)
	for _, id := range cells {
		cfg := etcdcell.Local(id, id+"-0")
		cfg.Cluster, cfg.Logger = c.name, quiet
		in, err := etcdcell.Register(ctxT(t), cli, cfg)
		must(t, err)
		t.Cleanup(func() { in.Close() })
		c.inst[id] = in
	}
	return c
}

// update changes the map and waits until every instance applied it.
func (c *cluster) update(t *testing.T, f func(*router.Table) error) {
	t.Helper()
	tb, err := c.store.Update(ctxT(t), "test", f)
	must(t, err)
	for _, in := range c.inst {
		waitFor(t, fmt.Sprintf("guard at epoch %d", tb.Epoch()), func() bool { return in.Guard().Table().Epoch() >= tb.Epoch() })
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// usersIn returns n user keys whose slots are in [first, last].
func usersIn(n, first, last int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		u := fmt.Sprintf("u-%04d", i)
		if s := router.KeySlot(u, slots); s >= first && s <= last {
			out = append(out, u)
		}
	}
	return out
}

func payOrder(t testing.TB, api paycell.API, owner, merchant string, amount int64, req string) paycell.Order {
	t.Helper()
	ctx := ctxT(t)
	o, err := api.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: owner, RequestID: "o-" + req, Merchant: merchant, Amount: amount})
	must(t, err)
	_, err = api.Pay(ctx, paycell.PayRequest{OrderID: o.OrderID, RequestID: "p-" + req})
	must(t, err)
	return o
}

func TestSettlerOnlySettlesOwnedKeys(t *testing.T) {
	c := newCluster(t, "a1")
	guard := c.inst["a1"].Guard()
	svc, _ := newService(t, dialects[0])
	ctx := ctxT(t)
	mine, theirs := usersIn(2, 0, 511), usersIn(1, 512, 1023)
	// a1's books hold rows of a b1 user too (as between a flip and a prune).
	for _, u := range append(slices.Clone(mine), theirs...) {
		fund(t, svc, u, 1000)
	}
	payOrder(t, svc, mine[0], "m1", 100, "1")
	payOrder(t, svc, mine[1], "m1", 50, "2")
	o3 := payOrder(t, svc, mine[1], "m2", 70, "3")
	_, err := svc.Refund(ctx, paycell.RefundRequest{OrderID: o3.OrderID, RequestID: "f3", Amount: 20})
	must(t, err)
	payOrder(t, svc, theirs[0], "m1", 1, "4")

	var log admission.Log
	st, err := paycell.NewSettler(svc, paycell.SettlerConfig{Guard: guard, Instance: "a1-0", OnAdmit: log.Admitted, OnRelease: log.Released})
	must(t, err)
	rep, err := st.SettleOnce(ctx)
	must(t, err)
	got := map[string]int64{}
	for _, b := range rep.Batches {
		got[b.Merchant] = b.Amount
	}
	if got["m1"] != 150 || got["m2"] != 50 || len(got) != 2 || rep.Owners != 2 || rep.Legs != 4 {
		t.Fatalf("round 1: %+v", rep)
	}
	if !slices.Equal(rep.Skipped, theirs) {
		t.Fatalf("skipped %v, want %v (owned by b1)", rep.Skipped, theirs)
	}
	if n := log.Running(); n != 0 {
		t.Fatalf("%d admissions still held after the round", n)
	}
	recs := log.Records()
	if len(recs) != 2 || recs[0].Method != paycell.SettleMethod || recs[0].Kind != cell.Write {
		t.Fatalf("admission records %v", recs)
	}

	// Idempotent: nothing new, nothing settled.
	rep, err = st.SettleOnce(ctx)
	must(t, err)
	if len(rep.Batches) != 0 || !slices.Equal(rep.Skipped, theirs) {
		t.Fatalf("round 2 settled again: %+v", rep)
	}
	b := checkBooks(t, svc)
	if b.Merchants != 200 || b.Unsettled != 1 || b.MerchantPending != 1 {
		t.Fatalf("books after settling: %+v", b)
	}

	// A refund after settlement nets negative in the next round.
	must(t, errors.Join(func() error {
		_, err := svc.Refund(ctx, paycell.RefundRequest{OrderID: o3.OrderID, RequestID: "f3b", Amount: 50})
		return err
	}()))
	rep, err = st.SettleOnce(ctx)
	must(t, err)
	if len(rep.Batches) != 1 || rep.Batches[0].Merchant != "m2" || rep.Batches[0].Amount != -50 {
		t.Fatalf("round 3: %+v", rep)
	}

	// A frozen key is not settled while it is frozen.
	frozen := mine[0]
	payOrder(t, svc, frozen, "m1", 5, "5")
	c.update(t, func(tb *router.Table) error {
		s := tb.Slot(frozen)
		return tb.Freeze(router.SlotRange{First: s, Last: s}, "cut-1")
	})
	rep, err = st.SettleOnce(ctx)
	must(t, err)
	if len(rep.Batches) != 0 || !slices.Contains(rep.Skipped, frozen) {
		t.Fatalf("round with %s frozen: %+v", frozen, rep)
	}
	c.update(t, func(tb *router.Table) error {
		s := tb.Slot(frozen)
		return tb.Unfreeze(router.SlotRange{First: s, Last: s})
	})
	rep, err = st.SettleOnce(ctx)
	must(t, err)
	if len(rep.Batches) != 1 || rep.Batches[0].Amount != 5 {
		t.Fatalf("round after unfreezing: %+v", rep)
	}
	b = checkBooks(t, svc)
	if b.Merchants != 155 || b.Unsettled != 1 {
		t.Fatalf("books: %+v", b)
	}
}

// TestSettlerHoldsBackTheBarrier: while a round holds its admissions, the
// guard does not acknowledge an epoch that freezes the round's keys.
func TestSettlerAdmissionsHoldTheAck(t *testing.T) {
	c := newCluster(t, "a1")
	in := c.inst["a1"]
	svc, _ := newService(t, dialects[0])
	u := usersIn(1, 0, 511)[0]
	fund(t, svc, u, 100)
	payOrder(t, svc, u, "m1", 10, "1")
	blocked := make(chan struct{})
	release := make(chan struct{})
	st, err := paycell.NewSettler(svc, paycell.SettlerConfig{Guard: in.Guard(), OnAdmit: func(admission.Record) {
		close(blocked)
		<-release // the round is "in flight" with its key admitted
	}})
	must(t, err)
	done := make(chan error, 1)
	go func() { _, err := st.SettleOnce(context.Background()); done <- err }()
	<-blocked
	tb, err := c.store.Update(ctxT(t), "freeze", func(tb *router.Table) error {
		s := tb.Slot(u)
		return tb.Freeze(router.SlotRange{First: s, Last: s}, "cut-1")
	})
	must(t, err)
	waitFor(t, "guard applied the freeze", func() bool { return in.Guard().Table().Epoch() == tb.Epoch() })
	if a := in.Guard().Applied(); a >= tb.Epoch() {
		t.Fatalf("guard acknowledged epoch %d while the settler held %s", a, u)
	}
	close(release)
	must(t, <-done)
	waitFor(t, "ack after the round", func() bool { return in.Acked() >= tb.Epoch() })
}

// TestLoadKeepsBooksBalanced runs concurrent payments, refunds, top-ups,
// withdrawals and their callbacks beside a running settler.
func TestLoadKeepsBooksBalanced(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d dialect) {
		c := newCluster(t, "a1")
		svc, _ := newService(t, d)
		users := usersIn(8, 0, 511)
		for _, u := range users {
			fund(t, svc, u, 500)
		}
		st, err := paycell.NewSettler(svc, paycell.SettlerConfig{Guard: c.inst["a1"].Guard(), Every: 5 * time.Millisecond})
		must(t, err)
		sctx, stop := context.WithCancel(context.Background())
		settled := make(chan error, 1)
		go func() { settled <- st.Run(sctx) }()

		ctx := ctxT(t)
		var wg sync.WaitGroup
		var ok, refused atomic.Int64
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for i := range 40 {
					u := users[r.IntN(len(users))]
					req := fmt.Sprintf("w%d-%d", w, i)
					err := loadStep(ctx, svc, r, u, req)
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, paycell.ErrInsufficientFunds) || errors.Is(err, paycell.ErrConflict):
						refused.Add(1)
					default:
						t.Errorf("%s: %v", req, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		stop()
		<-settled
		rep, err := st.SettleOnce(ctx)
		must(t, err)
		b := checkBooks(t, svc)
		t.Logf("%d ok, %d refused; last round %+v; books %+v", ok.Load(), refused.Load(), rep, b)
		if b.Unsettled != 0 {
			t.Fatalf("unsettled merchant legs %d after the last round", b.Unsettled)
		}
		if b.Held() != -b.Clearing {
			t.Fatalf("money not conserved: held %d, bank brought %d", b.Held(), -b.Clearing)
		}
	})
}

// loadStep does one random operation for u.
func loadStep(ctx context.Context, svc *paycell.Service, r *rand.Rand, u, req string) error {
	switch r.IntN(4) {
	case 0, 1: // pay, sometimes refund part
		o, err := svc.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: u, RequestID: "o" + req, Merchant: fmt.Sprint("m", r.IntN(3)), Amount: 1 + r.Int64N(60)})
		if err != nil {
			return err
		}
		if _, err := svc.Pay(ctx, paycell.PayRequest{OrderID: o.OrderID, RequestID: "p" + req}); err != nil {
			return err
		}
		if r.IntN(3) == 0 {
			_, err = svc.Refund(ctx, paycell.RefundRequest{OrderID: o.OrderID, RequestID: "f" + req, Amount: 1 + r.Int64N(o.Amount)})
		}
		return err
	case 2:
		op, err := svc.TopUp(ctx, paycell.BankRequest{Owner: u, RequestID: "t" + req, Amount: 1 + r.Int64N(50)})
		if err != nil {
			return err
		}
		_, err = svc.BankCallback(ctx, paycell.CallbackRequest{OpID: op.OpID, Status: []string{paycell.BankSucceeded, paycell.BankFailed}[r.IntN(2)]})
		return err
	default:
		op, err := svc.Withdraw(ctx, paycell.BankRequest{Owner: u, RequestID: "w" + req, Amount: 1 + r.Int64N(40)})
		if err != nil {
			return err
		}
		_, err = svc.BankCallback(ctx, paycell.CallbackRequest{OpID: op.OpID, Status: []string{paycell.BankSucceeded, paycell.BankFailed}[r.IntN(2)]})
		return err
	}
}
