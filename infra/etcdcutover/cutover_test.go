package etcdcutover_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// progressLog collects a runner's progress for the test log.
type progressLog struct {
	mu    sync.Mutex
	lines []string
}

func (p *progressLog) add(pr failover.Progress) {
	if pr.Kind == "barrier" || pr.Kind == "gate" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, fmt.Sprintf("%d/%d %-8s %-9s %-8s %s", pr.Stage, pr.Stages, pr.StageName, pr.Step, pr.Status, pr.Message))
}

// TestStagedMoveUnderLoad is the acceptance test: a full
// whitelist → 1/256 → 1/8 → 1/4 → 1/2 → 1 move of everything IDC-A owns to
// IDC-B, with real guards registered in etcd, the SDK routing concurrent
// writers by the map, and the probe gate. No client request may fail, no
// key may be write-admitted by two cells at overlapping times (from the
// guards' own admission records), and it reports the write-unavailable
// window (freeze applied → flip applied) of each stage.
func TestStagedMoveUnderLoad(t *testing.T) {
	canaries := []string{"canary-alice", "canary-bob"}
	l := newLab(t, fourCells(t, canaries...), labConfig{})
	p := plan(t, l.orig, "")
	// Three writes in four go to keys of the stage moving now.
	ld := l.startLoad(16, append(users(400), canaries...))
	var pl progressLog
	follow := chase(ld, p, pl.add)
	l.startRogues(ld, 8)
	waitPaid(t, ld, 200)

	ctl := l.acquire(5 * time.Second)
	defer ctl.Close()
	st := failover.NewState(failover.NewID("cut", time.Now()), "tester", "acceptance: IDC-A to IDC-B", p,
		failover.Options{Auto: true, Bake: 300 * time.Millisecond, BarrierTimeout: 10 * time.Second, DataTimeout: 5 * time.Second}, time.Now())
	must(t, ctl.Create(ctxT(t), st))
	r := failover.Runner{Control: ctl, Gates: []failover.Gate{failover.ProbeGate{Probe: l.prober()}}, GateInterval: 100 * time.Millisecond, OnProgress: follow}
	start := time.Now()
	final, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
	took := time.Since(start)
	waitPaid(t, ld, ld.ok.Load()+200)
	ld.Stop()
	for _, line := range pl.lines {
		t.Log(line)
	}
	must(t, err)
	if final.Status != failover.StatusDone {
		t.Fatalf("cutover ended %s: %s", final.Status, final.Reason)
	}

	tb := l.checkNothingFrozen()
	if own := owners(tb); own["a1"]+own["a2"] != 0 || own["b1"]+own["b2"] != slots {
		t.Errorf("owners after the move: %v", own)
	}
	for _, k := range canaries {
		if o := tb.Owner(k); o.IDC != "IDC-B" {
			t.Errorf("canary %s served by %s after the move", k, o.ID)
		}
	}
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d client requests failed (of %d), e.g. %v", n, n+ld.ok.Load(), ld.errs)
	}
	l.checkSingleWriter()

	stored, _, err := ctl.Records().Get(ctxT(t), st.ID)
	must(t, err)
	var windows []time.Duration
	for i, sl := range stored.Stages {
		if !sl.Flipped {
			t.Errorf("stage %s not flipped in the record", sl.Name)
		}
		windows = append(windows, sl.Window)
		t.Logf("stage %-9s slots %4d keys %d  freeze@%d flip@%d  write-unavailable window %v",
			sl.Name, p.Stages[i].Slots, len(p.Stages[i].Keys), sl.FreezeEpoch, sl.FlipEpoch, sl.Window.Round(time.Microsecond))
	}
	t.Logf("write-unavailable window over %d stages: p50 %v p99 %v max %v; move took %v (bake %v per stage)",
		len(windows), pct(windows, 0.5).Round(time.Microsecond), pct(windows, 0.99).Round(time.Microsecond),
		pct(windows, 1).Round(time.Microsecond), took.Round(time.Millisecond), 300*time.Millisecond)
	t.Logf("client writes: %d ok, %d failed; latency p50 %v p99 %v max %v; %d admission records",
		ld.ok.Load(), ld.failed.Load(), pct(ld.lat, 0.5).Round(time.Microsecond), pct(ld.lat, 0.99).Round(time.Microsecond),
		pct(ld.lat, 1).Round(time.Microsecond), len(l.log.Records()))
}

func waitPaid(t *testing.T, ld *load, n int64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for ld.ok.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d paid writes (have %d, %d failed: %v)", n, ld.ok.Load(), ld.failed.Load(), ld.errs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errKilled = errors.New("runner killed by the test")

// TestRunnerKilledAtEachStepResumes kills the runner (it stops and its
// lease is abandoned, as when its process dies) before the action of each
// step of a stage, then a new runner takes the lock once the lease expires
// and resumes from the record. Every move must complete, with nothing
// frozen and no two cells writing one key.
func TestRunnerKilledAtEachStepResumes(t *testing.T) {
	for _, step := range []failover.StepName{failover.StepFreeze, failover.StepBarrier, failover.StepData, failover.StepFlip, failover.StepVerify} {
		t.Run(string(step), func(t *testing.T) {
			l := newLab(t, fourCells(t), labConfig{})
			ld := l.startLoad(4, users(100))
			waitPaid(t, ld, 50)
			p := plan(t, l.orig, "1/256,1/8,1")
			st := failover.NewState(failover.NewID("cut", time.Now()), "tester", "kill at "+string(step), p,
				failover.Options{Auto: true, Bake: 100 * time.Millisecond, BarrierTimeout: 10 * time.Second}, time.Now())
			ctl := l.acquire(2 * time.Second)
			must(t, ctl.Create(ctxT(t), st))
			killed := 0
			r := failover.Runner{Control: ctl, GateInterval: 50 * time.Millisecond, BeforeAction: func(s *failover.State, a failover.Action) error {
				if s.Stage == 1 && s.Step == step && killed == 0 {
					killed++
					return errKilled
				}
				return nil
			}}
			_, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
			if !errors.Is(err, errKilled) {
				t.Fatalf("runner not killed at %s: %v", step, err)
			}
			ctl.Abandon() // the process is gone: its lease runs out

			rec, _, err := ctl.Records().Get(ctxT(t), st.ID)
			must(t, err)
			if rec.Step != step || rec.Stage != 1 || rec.Status != failover.StatusRunning {
				t.Fatalf("record after the kill: stage %d step %s status %s", rec.Stage, rec.Step, rec.Status)
			}
			// A second runner cannot take the lock until the lease expires.
			if _, err := etcdcutover.TryAcquire(ctxT(t), l.cli, etcdcutover.Config{Cluster: cluster, LockTTL: 2 * time.Second}); !errors.Is(err, etcdcutover.ErrLocked) {
				t.Fatalf("lock of a dead runner taken at once: %v", err)
			}
			ctl2 := l.acquire(2 * time.Second)
			defer ctl2.Close()
			r2 := failover.Runner{Control: ctl2, GateInterval: 50 * time.Millisecond}
			final, err := r2.Run(ctxT(t), rec, failover.Event{Kind: failover.EvResume, At: time.Now()})
			must(t, err)
			ld.Stop()
			if final.Status != failover.StatusDone {
				t.Fatalf("resumed cutover ended %s: %s", final.Status, final.Reason)
			}
			tb := l.checkNothingFrozen()
			if own := owners(tb); own["a1"]+own["a2"] != 0 {
				t.Errorf("owners after the move: %v", own)
			}
			if n := ld.failed.Load(); n != 0 {
				t.Errorf("%d client requests failed, e.g. %v", n, ld.errs)
			}
			l.checkSingleWriter()
			// The dead runner's lock-bound writes are refused.
			if err := ctl.Save(ctxT(t), final); !errors.Is(err, failover.ErrLockLost) {
				t.Errorf("a dead runner's save: %v, want ErrLockLost", err)
			}
		})
	}
}

// failGate fails for one stage.
type failGate struct{ stage string }

func (g failGate) Name() string { return "fail-" + g.stage }
func (g failGate) Check(_ context.Context, in failover.GateInput) failover.GateResult {
	return failover.GateResult{OK: in.Stage != g.stage, Detail: "stage " + in.Stage}
}

// TestGateFailureRollsBackStage: a gate that fails after the flip of 1/8
// rolls that stage back with the same protocol in reverse; earlier stages
// stay moved, nothing is left frozen, and the cutover holds as failed. An
// operator's rollback then undoes the earlier stage too: the map is back
// to the original ownership.
func TestGateFailureRollsBackStage(t *testing.T) {
	l := newLab(t, fourCells(t), labConfig{})
	ld := l.startLoad(4, users(100))
	waitPaid(t, ld, 50)
	p := plan(t, l.orig, "1/256,1/8,1")
	ctl := l.acquire(5 * time.Second)
	defer ctl.Close()
	st := failover.NewState("cut-gate", "tester", "gate failure", p, failover.Options{Auto: true, Bake: 100 * time.Millisecond}, time.Now())
	must(t, ctl.Create(ctxT(t), st))
	r := failover.Runner{Control: ctl, Gates: []failover.Gate{failGate{"1/8"}}, GateInterval: 50 * time.Millisecond}
	final, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
	must(t, err)
	ld.Stop()
	if final.Status != failover.StatusFailed || !final.Stages[1].RolledBack || final.Stages[0].RolledBack {
		t.Fatalf("ended %s (%s), stages %+v", final.Status, final.Reason, final.Stages)
	}
	tb := l.checkNothingFrozen()
	for _, m := range p.Stages[0].Moves {
		if o := tb.SlotOwner(m.First); o != m.To {
			t.Errorf("stage 1/256 slot %d owned by %s, want it to stay at %s", m.First, o, m.To)
		}
	}
	for _, m := range p.Stages[1].Moves {
		if o := tb.SlotOwner(m.First); o != m.From {
			t.Errorf("rolled back slot %d owned by %s, want %s", m.First, o, m.From)
		}
	}
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d client requests failed, e.g. %v", n, ld.errs)
	}
	l.checkSingleWriter()
	if !strings.Contains(final.Reason, "fail-1/8") {
		t.Errorf("reason %q does not name the gate", final.Reason)
	}

	r.Gates = nil
	back, err := r.Run(ctxT(t), final, failover.Event{Kind: failover.EvRollback, At: time.Now(), Detail: "tester: undo"})
	must(t, err)
	if back.Status != failover.StatusRolledBack {
		t.Fatalf("after the operator's rollback: %s (%s)", back.Status, back.Reason)
	}
	tb = l.checkNothingFrozen()
	for s := range slots {
		if got, want := tb.SlotOwner(s), l.orig.SlotOwner(s); got != want {
			t.Fatalf("slot %d owned by %s after the rollback, want %s", s, got, want)
		}
	}
}

// TestBarrierTimeoutUnfreezes: a write admitted for a slot of the stage and
// held past the barrier timeout keeps its guard from acking the freeze; the
// stage is unfrozen (its slots stay at the source), the record says
// failed with the pending instance named, and a resume once the write
// finished completes the move.
func TestBarrierTimeoutUnfreezes(t *testing.T) {
	l := newLab(t, fourCells(t), labConfig{})
	p := plan(t, l.orig, "1/256,1")
	first := p.Stages[0].Moves[0]
	key := keyIn(first.First)
	holder := l.cells[first.From]
	done := make(chan error, 1)
	go func() {
		_, err := l.pay(context.Background(), key, "hold")
		done <- err
	}()
	<-holder.held

	ctl := l.acquire(5 * time.Second)
	defer ctl.Close()
	st := failover.NewState("cut-barrier", "tester", "barrier timeout", p,
		failover.Options{Auto: true, Bake: 50 * time.Millisecond, BarrierTimeout: 700 * time.Millisecond}, time.Now())
	must(t, ctl.Create(ctxT(t), st))
	r := failover.Runner{Control: ctl}
	held, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
	must(t, err)
	if held.Status != failover.StatusFailed || !strings.Contains(held.Reason, first.From+"/") {
		t.Fatalf("after the barrier timeout: %s: %s", held.Status, held.Reason)
	}
	tb := l.checkNothingFrozen()
	if o := tb.SlotOwner(first.First); o != first.From {
		t.Fatalf("slot %d moved to %s despite the failed barrier", first.First, o)
	}
	holder.Release()
	must(t, <-done)

	final, err := r.Run(ctxT(t), held, failover.Event{Kind: failover.EvResume, At: time.Now()})
	must(t, err)
	if final.Status != failover.StatusDone || final.Stages[0].Attempts != 2 {
		t.Fatalf("after resume: %s (%s), attempts %d", final.Status, final.Reason, final.Stages[0].Attempts)
	}
	l.checkNothingFrozen()
	l.checkSingleWriter()
}
