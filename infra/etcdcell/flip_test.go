package etcdcell_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/router"
)

// TestFlipUnderLoadSingleWriter moves slots back and forth between two
// cells with the planned-cutover protocol (freeze, barrier on acks, flip)
// while writers send every key to both cells at once, and checks from the
// guards' own admission records that no key was ever write-admitted by two
// cells at overlapping times. Each write takes 30ms of service time so that
// writes are in flight across every map change: with the barrier left out,
// this test finds overlapping writes.
func TestFlipUnderLoadSingleWriter(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	st := createMap(t, cli)
	acks, err := etcdcell.NewAcks(cli, cluster)
	must(t, err)
	var log admission.Log
	cells := map[string]*cellServer{
		"a1": serveCellWork(t, register(t, cli, "a1", "a1-0", nil), &log, 30*time.Millisecond),
		"b1": serveCellWork(t, register(t, cli, "b1", "b1-0", nil), &log, 30*time.Millisecond),
	}
	moving := router.SlotRange{First: 0, Last: 3}
	var keys []string
	for i := 0; len(keys) < 8; i++ {
		if k := fmt.Sprintf("payer-%d", i); router.Slot(k, 256) <= moving.Last {
			keys = append(keys, k)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	admitted := map[string]*atomic.Int64{"a1": {}, "b1": {}}
	var unexpected atomic.Value
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[(w+i)%len(keys)]
				// Both cells at once: the guards alone decide who writes.
				var inner sync.WaitGroup
				for id, cs := range cells {
					inner.Add(1)
					go func() {
						defer inner.Done()
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						_, err := cs.credit(ctx, key, fmt.Sprint("w", seq.Add(1)))
						switch code := cell.CodeOf(wire.FromGRPC(err)); {
						case err == nil:
							admitted[id].Add(1)
						case code == cell.CodeWrongCell || code == cell.CodeFrozen:
						default:
							unexpected.CompareAndSwap(nil, fmt.Errorf("%s: %v", id, err))
						}
					}()
				}
				inner.Wait()
			}
		}()
	}

	from, to := "a1", "b1"
	for round := range 4 {
		base := admitted[from].Load()
		eventually(t, from+" to take writes for the moving slots", func() bool { return admitted[from].Load() > base+20 })
		frozen := update(t, st, fmt.Sprintf("round %d: freeze", round), func(tb *router.Table) error { return tb.Freeze(moving, "c1") })
		start := time.Now()
		if _, err := acks.WaitAcks(ctxT(t), frozen.Epoch()); err != nil {
			t.Fatalf("round %d: barrier: %v", round, err)
		}
		barrier := time.Since(start)
		flipped := update(t, st, fmt.Sprintf("round %d: flip %s -> %s", round, from, to), func(tb *router.Table) error {
			if err := tb.Assign(moving, to); err != nil {
				return err
			}
			return tb.Unfreeze(moving)
		})
		t.Logf("round %d: froze at epoch %d, barrier %v, flipped %s -> %s at epoch %d", round, frozen.Epoch(), barrier, from, to, flipped.Epoch())
		from, to = to, from
	}
	base := admitted[from].Load()
	eventually(t, from+" to take writes after the last flip", func() bool { return admitted[from].Load() > base+20 })
	close(stop)
	wg.Wait()

	if err, _ := unexpected.Load().(error); err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	recs := log.Records()
	if log.Running() != 0 {
		t.Fatalf("%d admissions never released", log.Running())
	}
	t.Logf("%d admission records; admitted a1 %d, b1 %d", len(recs), admitted["a1"].Load(), admitted["b1"].Load())
	for _, c := range admission.Conflicts(recs) {
		t.Error(c)
	}
	byCell := map[string]int{}
	for _, r := range recs {
		byCell[r.Cell]++
		if r.Slot < moving.First || r.Slot > moving.Last {
			t.Errorf("record outside the moving slots: %v", r)
		}
	}
	if byCell["a1"] == 0 || byCell["b1"] == 0 {
		t.Fatalf("records by cell %v: both cells should have written", byCell)
	}
}
