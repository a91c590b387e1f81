package cell_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/clock/clocktest"
)

func TestFenceLifecycle(t *testing.T) {
	clk := clocktest.New(time.Unix(1000, 0))
	f := cell.NewFence(clk, time.Second, "a1", "a1-0")

	// A new instance is fenced until it registers.
	if err := f.Check(); !errors.Is(err, cell.ErrFenced) || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("new fence: %v", err)
	}
	if f.Context().Err() == nil {
		t.Fatal("context of a new fence must be done")
	}

	// Registered with a 5s lease: live until sent + 5s - 1s margin.
	sent := clk.Now()
	clk.Advance(100 * time.Millisecond) // the grant's round trip
	must(t, f.Resume(sent, 5*time.Second))
	ctx := f.Context()
	if err := f.Check(); err != nil || ctx.Err() != nil {
		t.Fatalf("after Resume: %v, ctx %v", err, ctx.Err())
	}
	if d, live := f.Deadline(); !live || !d.Equal(sent.Add(4*time.Second)) {
		t.Fatalf("deadline %v live %v", d, live)
	}

	// A renewal sent at +2s extends to +6s; a stale renewal never shortens it.
	clk.Advance(1900 * time.Millisecond) // now sent+2s
	f.Renewed(clk.Now(), 5*time.Second)
	f.Renewed(sent, 5*time.Second)
	if d, _ := f.Deadline(); !d.Equal(sent.Add(6 * time.Second)) {
		t.Fatalf("deadline after renewal %v, want sent+6s", d)
	}
	clk.Advance(3999 * time.Millisecond) // sent+5.999s
	if err := f.Check(); err != nil {
		t.Fatalf("fenced 1ms early: %v", err)
	}

	// No renewal: fenced exactly at the deadline, and the context says why,
	// even before the timer goroutine has run.
	clk.Advance(time.Millisecond)
	err := f.Check()
	if !errors.Is(err, cell.ErrFenced) || !strings.Contains(err.Error(), "not renewed in time") {
		t.Fatalf("at deadline: %v", err)
	}
	<-ctx.Done()
	var fe *cell.FencedError
	if !errors.As(context.Cause(ctx), &fe) || fe.Cell != "a1" || fe.Instance != "a1-0" {
		t.Fatalf("context cause %v", context.Cause(ctx))
	}

	// A late renewal does not reopen a tripped fence; only Resume does.
	f.Renewed(clk.Now(), 5*time.Second)
	if err := f.Check(); err == nil {
		t.Fatal("a late renewal reopened the fence")
	}
	must(t, f.Resume(clk.Now(), 5*time.Second))
	if err := f.Check(); err != nil {
		t.Fatalf("after second Resume: %v", err)
	}
	if f.Context() == ctx || f.Context().Err() != nil {
		t.Fatal("Resume must hand out a fresh, live context")
	}

	// Trip fences at once.
	f.Trip("lease revoked")
	if err := f.Check(); err == nil || !strings.Contains(err.Error(), "lease revoked") {
		t.Fatalf("after Trip: %v", err)
	}
}

// The timer trips the fence when the deadline passes even if nobody calls
// Check, so requests in flight see their context cancelled.
func TestFenceTimerCancelsContext(t *testing.T) {
	clk := clocktest.New(time.Unix(0, 0))
	f := cell.NewFence(clk, 500*time.Millisecond, "a1", "i")
	must(t, f.Resume(clk.Now(), 2*time.Second))
	ctx := f.Context()
	clk.Advance(1500 * time.Millisecond)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("fence context not cancelled after the deadline")
	}
}

func TestFenceResumeRefusals(t *testing.T) {
	clk := clocktest.New(time.Unix(0, 0))
	f := cell.NewFence(clk, time.Second, "a1", "i")
	if err := f.Resume(clk.Now(), time.Second); !errors.Is(err, cell.ErrBadConfig) {
		t.Fatalf("TTL equal to margin: %v", err)
	}
	sent := clk.Now()
	clk.Advance(5 * time.Second) // registration took longer than the lease
	if err := f.Resume(sent, 5*time.Second); !errors.Is(err, cell.ErrFenced) {
		t.Fatalf("Resume past its own deadline: %v", err)
	}
}

// A guard with a fence admits nothing while fenced, and a write admitted
// before the fence trips has its context cancelled.
func TestGuardFenced(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New(time.Unix(0, 0))
	f := cell.NewFence(clk, time.Second, "a1", "a1-0")
	g := newGuard(t, "a1", table(t, 1, nil), f)
	k := keyIn(1)
	if _, err := g.Admit(ctx, k, cell.Read, 0); !errors.Is(err, cell.ErrFenced) {
		t.Fatalf("before registration: %v", err)
	}
	must(t, f.Resume(clk.Now(), 3*time.Second))
	a, err := g.Admit(ctx, k, cell.Write, 0)
	must(t, err)
	reqCtx := f.Context()
	clk.Advance(2 * time.Second)
	if _, err := g.Admit(ctx, k, cell.Write, 0); !errors.Is(err, cell.ErrFenced) {
		t.Fatalf("after the deadline: %v", err)
	}
	<-reqCtx.Done()
	a.Release()
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d", g.InFlight())
	}
}
