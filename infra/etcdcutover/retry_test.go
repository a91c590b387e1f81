package etcdcutover_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
)

// outage is an etcd error as the Control reports it: transient, so the
// runner may repeat the write.
func outage(what string) error {
	return fmt.Errorf("etcdcutover: %s: %w", what, errors.Join(rpctypes.ErrStopped, failover.ErrUnavailable))
}

// flakyControl is the real etcd Control with etcd "failing" around some
// writes: before the write reaches etcd (nothing happened) or after it
// committed (the answer was lost: the runner cannot tell the two apart).
type flakyControl struct {
	*etcdcutover.Control
	mu        sync.Mutex
	calls     map[string]int
	injected  int
	permanent error // returned by every ApplyChange when set
	always    bool  // every write fails before reaching etcd
}

// fail decides for the n-th call of op: 0 pass, 1 fail before, 2 fail after.
func (f *flakyControl) fail(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.always {
		f.injected++
		return 1
	}
	if f.permanent != nil {
		return 0
	}
	f.calls[op]++
	n := f.calls[op]
	switch {
	case n%3 == 1:
		f.injected++
		return 1 + n/3%2 // first of each three fails, alternately before and after
	}
	return 0
}

func (f *flakyControl) ApplyChange(ctx context.Context, reason string, ch failover.Change, save func(uint64) (*failover.State, error)) (uint64, error) {
	if f.permanent != nil {
		return 0, f.permanent
	}
	switch f.fail("apply") {
	case 1:
		return 0, outage(string(ch.Op))
	case 2:
		if _, err := f.Control.ApplyChange(ctx, reason, ch, save); err != nil {
			return 0, err
		}
		return 0, outage(string(ch.Op))
	}
	return f.Control.ApplyChange(ctx, reason, ch, save)
}

func (f *flakyControl) Save(ctx context.Context, s *failover.State) error {
	switch f.fail("save") {
	case 1:
		return outage("save")
	case 2:
		if err := f.Control.Save(ctx, s); err != nil {
			return err
		}
		return outage("save")
	}
	return f.Control.Save(ctx, s)
}

// TestRunnerRidesOutEtcdOutages: a cutover whose map edits and record
// writes fail transiently (before reaching etcd, or after committing with
// the answer lost) completes under load by repeating them, with nothing
// double-admitted and no slot left frozen; a permanent error stops the
// runner at once, and an outage longer than RetryFor stops it with the
// record left for a resume.
func TestRunnerRidesOutEtcdOutages(t *testing.T) {
	l := newLab(t, fourCells(t), labConfig{})
	ld := l.startLoad(8, users(200))
	waitPaid(t, ld, 50)
	p := plan(t, l.orig, "1/256,1/8,1")
	ctl := l.acquire(5 * time.Second)
	defer ctl.Close()
	opts := failover.Options{Auto: true, Bake: 100 * time.Millisecond, BarrierTimeout: 10 * time.Second}

	t.Run("permanent", func(t *testing.T) {
		st := failover.NewState(failover.NewID("cut", time.Now()), "tester", "permanent error", p, opts, time.Now())
		must(t, ctl.Create(ctxT(t), st))
		boom := errors.New("etcdcutover: request too large")
		fc := &flakyControl{Control: ctl, calls: map[string]int{}, permanent: boom}
		var retries int
		r := failover.Runner{Control: fc, GateInterval: 50 * time.Millisecond, OnProgress: func(pr failover.Progress) {
			if pr.Kind == "retry" {
				retries++
			}
		}}
		_, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
		if !errors.Is(err, boom) || retries != 0 {
			t.Errorf("permanent error: %v after %d retries, want it at once", err, retries)
		}
		abortRecorded(t, ctl, st.ID)
	})

	t.Run("outage-longer-than-RetryFor", func(t *testing.T) {
		st := failover.NewState(failover.NewID("cut", time.Now()), "tester", "long outage", p, opts, time.Now())
		must(t, ctl.Create(ctxT(t), st))
		fc := &flakyControl{Control: ctl, calls: map[string]int{}, always: true}
		r := failover.Runner{Control: fc, GateInterval: 50 * time.Millisecond, RetryFor: 400 * time.Millisecond}
		start := time.Now()
		_, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
		if !errors.Is(err, failover.ErrUnavailable) || !strings.Contains(err.Error(), "still failing after") {
			t.Errorf("long outage: %v", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the runner kept trying for %v with RetryFor 400ms", took)
		}
		if fc.injected < 3 {
			t.Errorf("%d attempts, want a few", fc.injected)
		}
		abortRecorded(t, ctl, st.ID)
	})

	t.Run("rides-out", func(t *testing.T) {
		st := failover.NewState(failover.NewID("cut", time.Now()), "tester", "flaky etcd", p, opts, time.Now())
		must(t, ctl.Create(ctxT(t), st))
		fc := &flakyControl{Control: ctl, calls: map[string]int{}}
		var retries []string
		r := failover.Runner{Control: fc, GateInterval: 50 * time.Millisecond, OnProgress: func(pr failover.Progress) {
			if pr.Kind == "retry" {
				retries = append(retries, pr.Message)
			}
		}}
		final, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
		waitPaid(t, ld, ld.ok.Load()+50)
		ld.Stop()
		must(t, err)
		if final.Status != failover.StatusDone {
			t.Fatalf("cutover ended %s: %s", final.Status, final.Reason)
		}
		if fc.injected < 6 || len(retries) != fc.injected {
			t.Errorf("%d failures injected, %d retries reported", fc.injected, len(retries))
		}
		t.Logf("%d transient failures injected; e.g. %q", fc.injected, retries[0])
		tb := l.checkNothingFrozen()
		if own := owners(tb); own["a1"]+own["a2"] != 0 {
			t.Errorf("owners after the move: %v", own)
		}
		rec, _, err := ctl.Records().Get(ctxT(t), st.ID)
		must(t, err)
		for _, sl := range rec.Stages {
			if !sl.Flipped || sl.FlipEpoch <= sl.FreezeEpoch {
				t.Errorf("stage %s in the record: flipped %v, freeze@%d flip@%d", sl.Name, sl.Flipped, sl.FreezeEpoch, sl.FlipEpoch)
			}
		}
		if n := ld.failed.Load(); n != 0 {
			t.Errorf("%d client requests failed, e.g. %v", n, ld.errs)
		}
		l.checkSingleWriter()
	})
}

// abortRecorded ends a cutover a test stopped midway, so the next one can
// start, and checks its record says running or not started (resumable)
// before that.
func abortRecorded(t *testing.T, ctl *etcdcutover.Control, id string) {
	t.Helper()
	rec, _, err := ctl.Records().Get(ctxT(t), id)
	must(t, err)
	ev := failover.Event{Kind: failover.EvResume, At: time.Now()}
	switch rec.Status {
	case failover.StatusRunning:
	case "":
		ev.Kind = failover.EvStart
	default:
		t.Fatalf("record after the stop: %s, want running or not started (resumable)", rec.Status)
	}
	must(t, ctl.Records().Send(ctxT(t), id, failover.CommandMsg{Command: failover.CmdAbort, Who: "tester", At: time.Now()}))
	r := failover.Runner{Control: ctl, GateInterval: 50 * time.Millisecond}
	final, err := r.Run(ctxT(t), rec, ev)
	must(t, err)
	if final.Status == failover.StatusRunning {
		t.Fatalf("aborted cutover still running: %s", final.Reason)
	}
}
