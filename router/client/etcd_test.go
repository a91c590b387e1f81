package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// The map lives in a real (embedded) etcd. Under a steady load of writes,
// slots are frozen and flipped back and forth with etcdstore.Update: the
// client follows every flip, writes for frozen keys wait and then go to the
// new owner, no caller sees an error, and every write is applied exactly
// once.
func TestEtcdMapFlipsAreFollowed(t *testing.T) {
	ctx := ctxT(t)
	st := etcdtest.Store(t, etcdtest.Client(t, etcdtest.Start(t)), "test")
	tb, err := st.Create(ctx, "bootstrap", baseMap(t, "a1", "b1"))
	must(t, err)

	// The cells' guards follow the map through their own watcher.
	cl := startCluster(t, tb, 2, "a1", "b1")
	gw := router.NewWatcher(st, router.WatcherConfig{OnUpdate: func(_, n *router.Table) { cl.apply(n) }})
	must(t, gw.Start(context.Background()))
	t.Cleanup(gw.Close)

	// The client follows it through a ContactSource.
	cs := client.NewContactSource(st, client.ContactConfig{ProbeInterval: 50 * time.Millisecond})
	t.Cleanup(cs.Wait)
	w := startWatcher(t, cs)
	cfg := client.LocalConfig(w, cl.disc)
	cfg.IsWrite, cfg.Contact = isCredit, cs
	cfg.Retry.FrozenWait = testTimeout
	s := &sdk{w: w}
	s.c, s.reg = mustClient(t, cfg)
	ledger := s.dial(t)

	moving := keysOf(t, tb, "a1", 3)
	steady := append(keysOf(t, tb, "a1", 5)[3:], keysOf(t, tb, "b1", 2)...)
	all := append(append([]string(nil), moving...), steady...)

	// Load: one writer per key, credits of 1 until stopped.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent sync.Map // key -> *atomic.Int64 of acknowledged credits
	errs := make(chan error, len(all))
	for _, k := range all {
		n := new(atomic.Int64)
		sent.Store(k, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := client.NewIdempotencyKey(k)
				if err == nil {
					_, err = ledger.Credit(client.WithIdempotencyKey(client.WithKey(ctx, k), id), k, 1, id)
				}
				if err != nil {
					errs <- fmt.Errorf("credit %s #%d: %w", k, i, err)
					return
				}
				n.Add(1)
			}
		}()
	}

	owner := "a1"
	for round := range 4 {
		target := map[string]string{"a1": "b1", "b1": "a1"}[owner]
		frozen, err := st.Update(ctx, fmt.Sprintf("freeze round %d", round), func(n *router.Table) error {
			for _, k := range moving {
				if err := n.Freeze(slotOf(n, k), fmt.Sprintf("cut-%d", round)); err != nil {
					return err
				}
			}
			return nil
		})
		must(t, err)
		if _, err := w.WaitEpoch(ctx, frozen.Epoch()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "writes for the frozen keys to wait", func() bool {
			return metricValue(s.reg, "cellkit_client_frozen_waiting", nil) >= 1
		})
		flipped, err := st.Update(ctx, fmt.Sprintf("flip round %d", round), func(n *router.Table) error {
			for _, k := range moving {
				if err := n.Assign(slotOf(n, k), target); err != nil {
					return err
				}
				if err := n.Unfreeze(slotOf(n, k)); err != nil {
					return err
				}
			}
			return nil
		})
		must(t, err)
		if _, err := w.WaitEpoch(ctx, flipped.Epoch()); err != nil {
			t.Fatal(err)
		}
		owner = target
		for _, k := range moving {
			e, err := ledger.Credit(client.WithKey(ctx, k), k, 0, fmt.Sprintf("probe-%d-%s", round, k))
			if err != nil || e.Cell != owner {
				t.Fatalf("round %d: key %s served by %q (%v), want %s", round, k, e.Cell, err, owner)
			}
		}
		if got := metricValue(s.reg, "cellkit_client_map_epoch", nil); got != float64(flipped.Epoch()) {
			t.Fatalf("map_epoch %v, want %d", got, flipped.Epoch())
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, k := range all {
		n, _ := sent.Load(k)
		acked := n.(*atomic.Int64).Load()
		if got := cl.books["a1"].Balance(k) + cl.books["b1"].Balance(k); got != float64(acked) {
			t.Errorf("key %s: %d credits acknowledged, %v applied", k, acked, got)
		}
	}
	if got := metricValue(s.reg, "cellkit_client_frozen_waits_total", map[string]string{"outcome": "flipped"}); got < 4 {
		t.Errorf("frozen_waits_total{flipped} = %v, want at least one per round", got)
	}
	if s.c.Stale() {
		t.Error("client reports a stale map with etcd up")
	}
	if errors.Is(w.Err(), context.Canceled) {
		t.Error(w.Err())
	}
}
