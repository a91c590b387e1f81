package lab

import (
	"context"
	"testing"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/lab/load"
)

// TestStagedMoveUnderPaymentsSQLite moves IDC-A's users to IDC-B and back
// with the copy mover over SQLite books while payments run through
// cellrouter, then checks the books: nothing lost, nothing duplicated,
// money conserved, no slot written by two cells.
func TestStagedMoveUnderPaymentsSQLite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := Start(ctx, Config{Dir: t.TempDir(), SlotCount: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	runMoveAndBack(ctx, t, l, "1/256,1/8,1/2,1")
}

func runMoveAndBack(ctx context.Context, t *testing.T, l *Lab, stages string) {
	t.Helper()
	g, err := load.New(load.Config{BaseURL: l.RouterURL, Users: Users(200), Workers: 4, Rate: 150, InitialBalance: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan load.Stats, 1)
	go func() { done <- g.Run(lctx) }()
	waitPayments(ctx, t, g, 100)

	st, err := failover.ParseStages(stages)
	if err != nil {
		t.Fatal(err)
	}
	opts := failover.Options{Auto: true, Bake: 200 * time.Millisecond, BarrierTimeout: 10 * time.Second, DataTimeout: 30 * time.Second}
	progress := func(p failover.Progress) {
		if p.Kind == "data" || p.Kind == "end" {
			t.Logf("%s %s: %s", p.StageName, p.Kind, p.Message)
		}
	}
	var last *failover.State
	for _, dir := range [][2]string{{"IDC-A", "IDC-B"}, {"IDC-B", "IDC-A"}} {
		before := g.Stats().Payments
		var final *failover.State
		var err error
		if last == nil {
			final, err = l.Cutover(ctx, "test: "+dir[0]+" to "+dir[1],
				failover.Request{From: failover.Endpoints{IDCs: []string{dir[0]}}, To: failover.Endpoints{IDCs: []string{dir[1]}}, Stages: st},
				opts, progress)
		} else {
			final, err = l.MoveBack(ctx, "test: back", last, opts, progress)
		}
		if err != nil {
			t.Fatal(err)
		}
		if final.Status != failover.StatusDone {
			t.Fatalf("cutover %s: %s", final.Status, final.Reason)
		}
		last = final
		var windows []time.Duration
		for _, s := range final.Stages {
			windows = append(windows, s.Window)
		}
		tb, err := l.Table(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a := len(tb.SlotsOf("a1")) + len(tb.SlotsOf("a2"))
		if want := map[string]int{"IDC-A": 0, "IDC-B": tb.SlotCount() / 2}[dir[0]]; a != want {
			t.Fatalf("after %s -> %s IDC-A owns %d slots, want %d", dir[0], dir[1], a, want)
		}
		waitPayments(ctx, t, g, before+100)
		t.Logf("%s -> %s: windows %v", dir[0], dir[1], windows)
	}
	stop()
	stats := <-done
	t.Logf("payments %d (%.0f/s), declined %d, failed %d, retries %d %v, latency p50 %v p99 %v",
		stats.Payments, stats.Throughput, stats.Declined, stats.Failed, stats.Retries, stats.RetriedBy, stats.Latency.P50, stats.Latency.P99)
	if stats.Failed != 0 {
		t.Errorf("%d operations failed: %v", stats.Failed, stats.Failures)
	}
	rep, err := l.Books(ctx, g.Acks())
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range rep.Invariants {
		t.Logf("%v %s: %s", inv.OK, inv.Name, inv.Detail)
		if !inv.OK {
			t.Errorf("invariant failed: %s: %d violations, e.g. %v", inv.Name, inv.Count, inv.Violations)
		}
	}
}

func waitPayments(ctx context.Context, t *testing.T, g *load.Generator, n int) {
	t.Helper()
	for g.Stats().Payments < n {
		if ctx.Err() != nil {
			t.Fatalf("waiting for %d payments: have %d (%d failed)", n, g.Stats().Payments, g.Stats().Failed)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
