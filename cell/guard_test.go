package cell_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/clock/clocktest"
	"github.com/cellkit/cellkit/router"
)

// table builds a sealed 256-slot map: a1 (IDC-A) owns 0-127, b1 (IDC-B)
// 128-255, then applies edit to a clone at the given epoch.
func table(t *testing.T, epoch uint64, edit func(*router.Table)) *router.Table {
	t.Helper()
	tb, err := router.NewTable(256)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []router.Cell{{ID: "a1", IDC: "IDC-A"}, {ID: "b1", IDC: "IDC-B"}} {
		if err := tb.AddCell(c); err != nil {
			t.Fatal(err)
		}
	}
	must(t, tb.Assign(router.SlotRange{First: 0, Last: 127}, "a1"))
	must(t, tb.Assign(router.SlotRange{First: 128, Last: 255}, "b1"))
	if edit != nil {
		edit(tb)
	}
	tb.SetEpoch(epoch)
	if err := tb.Validate(); err != nil {
		t.Fatal(err)
	}
	return tb.Seal()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// keyIn returns a key whose slot (in a 256-slot map) is s.
func keyIn(s int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("user-%d", i)
		if router.Slot(k, 256) == s {
			return k
		}
	}
}

func newGuard(t *testing.T, cellID string, tb *router.Table, f *cell.Fence) *cell.Guard {
	t.Helper()
	cfg := cell.DefaultConfig(cellID, cellID+"-0")
	cfg.StaleWait = 50 * time.Millisecond
	g, err := cell.NewGuard(cfg, tb, f)
	must(t, err)
	return g
}

func TestAdmitDecisions(t *testing.T) {
	ctx := context.Background()
	kA, kB, kFrozen, canary := keyIn(3), keyIn(200), keyIn(5), keyIn(150)
	tb := table(t, 7, func(tb *router.Table) {
		must(t, tb.Freeze(router.SlotRange{First: 5, Last: 5}, "c-1"))
		must(t, tb.SetWhitelist(canary, "a1")) // slot 150 belongs to b1
	})
	g := newGuard(t, "a1", tb, nil)

	for _, tc := range []struct {
		name string
		key  string
		kind cell.Kind
		code cell.Code
	}{
		{"owner write", kA, cell.Write, ""},
		{"owner read", kA, cell.Read, ""},
		{"other cell's key", kB, cell.Write, cell.CodeWrongCell},
		{"other cell's key, read", kB, cell.Read, cell.CodeWrongCell},
		{"frozen write", kFrozen, cell.Write, cell.CodeFrozen},
		{"frozen read is served by the owner", kFrozen, cell.Read, ""},
		{"whitelisted to self beats the slot owner", canary, cell.Write, ""},
		{"no key", "", cell.Write, cell.CodeNoKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := g.Admit(ctx, tc.key, tc.kind, 0)
			if got := cell.CodeOf(err); got != tc.code {
				t.Fatalf("Admit(%q) code %q (err %v), want %q", tc.key, got, err, tc.code)
			}
			if err == nil {
				if a.Epoch != 7 || a.Slot != router.Slot(tc.key, 256) {
					t.Fatalf("admission %+v", a)
				}
				a.Release()
				a.Release() // twice is harmless
			}
		})
	}
	_, err := g.Admit(ctx, kB, cell.Write, 0)
	var wc *cell.WrongCellError
	if !errors.As(err, &wc) || wc.Owner != "b1" || wc.OwnerIDC != "IDC-B" || wc.Epoch != 7 || wc.Cell != "a1" {
		t.Fatalf("WRONG_CELL details: %#v", err)
	}
	_, err = g.Admit(ctx, kFrozen, cell.Write, 0)
	var fz *cell.FrozenError
	if !errors.As(err, &fz) || fz.Cutover != "c-1" || fz.Slot != 5 || fz.RetryAfter <= 0 {
		t.Fatalf("FROZEN details: %#v", err)
	}
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d after releases", g.InFlight())
	}

	// A cell marked fenced in the map admits nothing, reads included.
	g.Apply(table(t, 8, func(tb *router.Table) { must(t, tb.SetCellState("a1", router.StateFenced)) }))
	if _, err := g.Admit(ctx, kA, cell.Read, 0); !errors.Is(err, cell.ErrFenced) {
		t.Fatalf("fenced cell admitted a read: %v", err)
	}
}

// A request that routed with a newer epoch waits for the guard to catch up,
// and is refused with STALE_MAP if it does not in time.
func TestStaleGuardWaitsForNewerEpoch(t *testing.T) {
	ctx := context.Background()
	k := keyIn(10)
	clk := clocktest.New(time.Unix(0, 0))
	cfg := cell.DefaultConfig("b1", "b1-0")
	cfg.Clock, cfg.StaleWait = clk, time.Second
	g, err := cell.NewGuard(cfg, table(t, 1, nil), nil)
	must(t, err)

	// The router already saw epoch 2, which moved slot 10 to b1.
	moved := table(t, 2, func(tb *router.Table) { must(t, tb.Assign(router.SlotRange{First: 10, Last: 10}, "b1")) })
	done := make(chan error, 1)
	go func() {
		a, err := g.Admit(ctx, k, cell.Write, 2)
		if err == nil {
			if a.Epoch != 2 {
				err = fmt.Errorf("admitted at epoch %d", a.Epoch)
			}
			a.Release()
		}
		done <- err
	}()
	waitTimers(t, clk, 1)
	g.Apply(moved)
	if err := <-done; err != nil {
		t.Fatalf("request with a newer epoch: %v (a stale guard must not say no, nor yes)", err)
	}

	// Epoch 3 never arrives: STALE_MAP once StaleWait passes.
	go func() { _, err := g.Admit(ctx, k, cell.Write, 3); done <- err }()
	waitTimers(t, clk, 1)
	clk.Advance(time.Second)
	err = <-done
	var sm *cell.StaleMapError
	if !errors.As(err, &sm) || sm.Have != 2 || sm.Want != 3 {
		t.Fatalf("want STALE_MAP have 2 want 3, got %v", err)
	}
}

func waitTimers(t *testing.T, clk *clocktest.Clock, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clk.Pending() < n {
		if time.Now().After(deadline) {
			t.Fatalf("no timer armed")
		}
		time.Sleep(time.Millisecond)
	}
}

// The barrier property: an epoch that freezes a slot is acknowledged only
// once the writes admitted for that slot under older epochs have finished;
// writes for other slots do not hold it back.
func TestAppliedWaitsForWritesOnFrozenSlots(t *testing.T) {
	ctx := context.Background()
	kMoving, kStaying := keyIn(20), keyIn(21)
	g := newGuard(t, "a1", table(t, 1, nil), nil)

	moving, err := g.Admit(ctx, kMoving, cell.Write, 0)
	must(t, err)
	staying, err := g.Admit(ctx, kStaying, cell.Write, 0)
	must(t, err)
	reading, err := g.Admit(ctx, kMoving, cell.Read, 0)
	must(t, err)
	defer reading.Release()

	g.Apply(table(t, 2, func(tb *router.Table) { must(t, tb.Freeze(router.SlotRange{First: 20, Last: 20}, "c-1")) }))
	if got := g.Applied(); got != 1 {
		t.Fatalf("Applied() = %d with a write in flight on the frozen slot, want 1", got)
	}
	// New writes for the frozen slot are refused; the staying slot still works.
	if _, err := g.Admit(ctx, kMoving, cell.Write, 0); !errors.Is(err, cell.ErrFrozen) {
		t.Fatalf("write to frozen slot: %v", err)
	}

	ackCh := make(chan uint64, 1)
	go func() {
		e, err := g.NextApplied(ctx, 1)
		if err != nil {
			t.Error(err)
		}
		ackCh <- e
	}()
	staying.Release() // unrelated slot: not enough
	select {
	case e := <-ackCh:
		t.Fatalf("acked epoch %d while a write on the frozen slot was still running", e)
	default:
	}
	if got := g.Applied(); got != 1 {
		t.Fatalf("Applied() = %d after releasing only the unrelated write", got)
	}
	moving.Release()
	if e := <-ackCh; e != 2 {
		t.Fatalf("NextApplied = %d, want 2", e)
	}

	// Flip to b1 at epoch 3: no writes in flight, acked at once.
	g.Apply(table(t, 3, func(tb *router.Table) { must(t, tb.Assign(router.SlotRange{First: 20, Last: 20}, "b1")) }))
	if got := g.Applied(); got != 3 {
		t.Fatalf("Applied() = %d after flip, want 3", got)
	}
	if _, err := g.Admit(ctx, kMoving, cell.Write, 0); !errors.Is(err, cell.ErrWrongCell) {
		t.Fatalf("write after flip: %v", err)
	}
}

// Writes for a whitelisted key count under the key's slot: freezing the key
// (the whitelist stage of a cutover) holds the ack until they finish.
func TestAppliedWaitsForFrozenWhitelistedKey(t *testing.T) {
	ctx := context.Background()
	g := newGuard(t, "a1", table(t, 1, func(tb *router.Table) { must(t, tb.SetWhitelist("canary", "a1")) }), nil)
	a, err := g.Admit(ctx, "canary", cell.Write, 0)
	must(t, err)
	g.Apply(table(t, 2, func(tb *router.Table) {
		must(t, tb.SetWhitelist("canary", "a1"))
		must(t, tb.FreezeKey("canary", "c-9"))
	}))
	if got := g.Applied(); got != 1 {
		t.Fatalf("Applied() = %d with the frozen key's write in flight", got)
	}
	a.Release()
	if got := g.Applied(); got != 2 {
		t.Fatalf("Applied() = %d after release, want 2", got)
	}
}

// Under concurrent writes and map changes, whenever the guard acknowledges
// an epoch, no write admitted under an older epoch is still running for a
// slot that epoch does not let this cell write. The test's own record of
// running writes is a subset of the guard's (added after Admit, removed
// before Release), so any violation it sees is real. A quarter of the writes
// stay open across the next map change, and keys and changes share 32
// slots, so an early ack has every chance to show.
func TestConcurrentAckNeverEarly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const epochs, hot = 60, 32
	tables := make([]*router.Table, epochs+1)
	tables[0] = table(t, 1, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for e := 1; e <= epochs; e++ {
		tb := tables[e-1].Clone()
		first := rng.IntN(hot - 4)
		r := router.SlotRange{First: first, Last: first + rng.IntN(4)}
		switch rng.IntN(3) {
		case 0:
			must(t, tb.Freeze(r, fmt.Sprint("c-", e)))
		case 1:
			must(t, tb.Unfreeze(r))
		case 2:
			must(t, tb.Assign(r, []string{"a1", "b1"}[rng.IntN(2)]))
		}
		tb.SetEpoch(uint64(e + 1))
		must(t, tb.Validate())
		tables[e] = tb.Seal()
	}
	g := newGuard(t, "a1", tables[0], nil)
	keys := make([]string, hot)
	for s := range keys {
		keys[s] = keyIn(s)
	}

	type running struct {
		epoch uint64
		slot  int
	}
	var mu sync.Mutex
	active := map[*running]bool{}
	applied := make(chan struct{}) // closed and replaced at every Apply
	var admitted, spanning, parked, violations atomic.Int64
	const writers = 8

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for ctx.Err() == nil {
				mu.Lock()
				next := applied
				mu.Unlock()
				a, err := g.Admit(ctx, keys[r.IntN(hot)], cell.Write, 0)
				if err != nil {
					runtime.Gosched()
					continue
				}
				admitted.Add(1)
				rec := &running{a.Epoch, a.Slot}
				mu.Lock()
				active[rec] = true
				mu.Unlock()
				if r.IntN(4) == 0 {
					spanning.Add(1)
					parked.Add(1)
					select { // stay open across the next map change
					case <-next:
					case <-ctx.Done():
					}
					parked.Add(-1)
					for range r.IntN(50) {
						runtime.Gosched()
					}
				}
				mu.Lock()
				delete(active, rec)
				mu.Unlock()
				a.Release()
			}
		}()
	}
	acks := make(chan struct{})
	go func() {
		defer close(acks)
		var last uint64
		for last < uint64(epochs+1) {
			e, err := g.NextApplied(ctx, last)
			if err != nil {
				return
			}
			tb := tables[e-1]
			mu.Lock()
			for rec := range active {
				_, frozen := tb.SlotFrozen(rec.slot)
				if rec.epoch < e && (frozen || tb.SlotOwner(rec.slot) != "a1") {
					violations.Add(1)
					t.Errorf("acked epoch %d while a write admitted at epoch %d for slot %d (frozen %v, owner %s) was running",
						e, rec.epoch, rec.slot, frozen, tb.SlotOwner(rec.slot))
				}
			}
			mu.Unlock()
			last = e
		}
	}()
	for _, tb := range tables[1:] {
		// Let writes pile up under the current epoch before the next one
		// (or until every writer holds a write open across it).
		want := admitted.Load() + 20
		deadline := time.Now().Add(10 * time.Second)
		for admitted.Load() < want && parked.Load() < writers && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		g.Apply(tb)
		mu.Lock()
		close(applied)
		applied = make(chan struct{})
		mu.Unlock()
	}
	<-acks
	cancel()
	wg.Wait()
	if g.Applied() != uint64(epochs+1) {
		t.Fatalf("final Applied() = %d, want %d", g.Applied(), epochs+1)
	}
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d after all released", g.InFlight())
	}
	t.Logf("%d writes admitted across %d epochs (%d held across a map change), %d violations", admitted.Load(), epochs, spanning.Load(), violations.Load())
}

func TestConfigValidation(t *testing.T) {
	tb := table(t, 1, nil)
	for _, cfg := range []cell.Config{
		{Cell: "", Instance: "x"},
		{Cell: "a1", Instance: ""},
		{Cell: "a/1", Instance: "x"},
		{Cell: "a1", Instance: "x", StaleWait: -1},
	} {
		if _, err := cell.NewGuard(cfg, tb, nil); !errors.Is(err, cell.ErrBadConfig) {
			t.Errorf("NewGuard(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
	if _, err := cell.NewGuard(cell.DefaultConfig("a1", "i"), nil, nil); !errors.Is(err, cell.ErrBadConfig) {
		t.Errorf("nil table: %v", err)
	}
}
