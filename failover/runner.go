package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// ErrLockLost is wrapped by Control errors when the runner no longer holds
// the cutover lock (its lease expired; another runner may have taken over).
// A runner that sees it stops at once and writes nothing more.
var ErrLockLost = errors.New("cutover lock lost")

// ErrUnavailable marks a Control error as transient: the control plane could
// not be reached or asked to be tried again (for etcd: unavailable, no
// leader, leader changed, server stopped). Whether a write that failed with
// it took effect is unknown; every Control write is safe to repeat
// (ApplyChange of an edit the map already reflects records it at the
// current epoch), so the runner repeats it for up to Runner.RetryFor.
var ErrUnavailable = errors.New("control plane unavailable")

// Barrier is the progress of a barrier: who has acked the freeze epoch.
type Barrier struct {
	Epoch    uint64   `json:"epoch"`
	Acked    int      `json:"acked"`
	Expected int      `json:"expected"`
	Pending  []string `json:"pending,omitempty"` // cell/instance@epoch of those not acked yet
	// LeaseLeft bounds the time-to-live left of the pending instances'
	// leases (etcd counts whole seconds: they expire within it): when it
	// runs out they have fenced themselves and drop out of the barrier
	// (the countdown of an emergency failover).
	LeaseLeft time.Duration `json:"leaseLeft,omitempty"`
}

// CommandMsg is an operator command written for a running cutover.
type CommandMsg struct {
	Command Command   `json:"command"`
	Who     string    `json:"who"`
	Why     string    `json:"why"`
	At      time.Time `json:"at"`
	// Revision identifies the stored command, for Control.Consumed.
	Revision int64 `json:"-"`
}

// Control is the control plane a runner acts on; infra/etcdcutover
// implements it over etcd. Every write is conditional on the runner still
// holding the cutover lock, and fails with ErrLockLost otherwise.
type Control interface {
	// ApplyChange applies c to the map with compare-and-swap and, in the
	// same transaction, stores the record save returns for the new epoch.
	// When the map already reflects c it stores save(current epoch) and
	// returns that epoch. An edit the map refuses wraps ErrMapChanged.
	ApplyChange(ctx context.Context, reason string, c Change, save func(epoch uint64) (*State, error)) (uint64, error)
	// Save stores s as the cutover's record.
	Save(ctx context.Context, s *State) error
	// WaitAcks returns when every live guard instance has acked epoch;
	// instances whose lease expires drop out. progress is called as acks
	// arrive and at least every second.
	WaitAcks(ctx context.Context, epoch uint64, progress func(Barrier)) error
	// Table returns the current map.
	Table(ctx context.Context) (*router.Table, error)
	// Commands delivers the operator commands for cutover id, including one
	// already stored when it is called, until ctx ends.
	Commands(ctx context.Context, id string) <-chan CommandMsg
	// Consumed removes a handled command.
	Consumed(ctx context.Context, id string, m CommandMsg) error
}

// Progress is what a runner reports as it goes, for a terminal or a JSON
// event stream.
type Progress struct {
	At        time.Time     `json:"at"`
	Cutover   string        `json:"cutover"`
	Kind      string        `json:"kind"` // step, barrier, data, gate, command, retry, end
	Status    Status        `json:"status"`
	Stage     int           `json:"stage"` // 1-based, for people
	Stages    int           `json:"stages"`
	StageName string        `json:"stageName"`
	Step      StepName      `json:"step"`
	Message   string        `json:"message,omitempty"`
	FrozenFor time.Duration `json:"frozenFor,omitempty"`
	Barrier   *Barrier      `json:"barrier,omitempty"`
	Gates     []GateResult  `json:"gates,omitempty"`
	Action    *Action       `json:"action,omitempty"`
}

// Runner performs a cutover's actions until it holds or ends.
type Runner struct {
	Control Control
	// Mover is the data gate. Default NoneMover.
	Mover DataMover
	// Gates run during each stage's bake.
	Gates []Gate
	// GateInterval is the pause between gate checks during a bake.
	// Default 1s (or the bake time, if shorter).
	GateInterval time.Duration
	// Clock times events. Default the real clock.
	Clock clock.Clock
	// OnProgress, if set, receives every progress report, one at a time
	// (calls never overlap; keep it quick).
	OnProgress func(Progress)
	// BeforeAction, if set, is called before each action; an error stops
	// the runner at once, writing nothing more — how tests kill a runner
	// at a chosen step.
	BeforeAction func(s *State, a Action) error
	// RetryFor is how long the runner keeps repeating a control-plane
	// write that failed with ErrUnavailable (an etcd leader election, a
	// member restarting) before it stops, leaving the record for a
	// resume. Each retry is reported (Progress kind "retry"). Default 30s;
	// negative: stop at the first failure.
	RetryFor time.Duration

	reportMu sync.Mutex
}

// defaultRetryFor is Runner.RetryFor's default.
const defaultRetryFor = 30 * time.Second

// retry runs op, repeating it while it fails with ErrUnavailable, with a
// backoff from 50ms to 1s, for up to RetryFor. Any other error, the lock
// lost among them, returns at once.
func (r *Runner) retry(ctx context.Context, s *State, what string, op func() error) error {
	limit := r.RetryFor
	if limit == 0 {
		limit = defaultRetryFor
	}
	var start time.Time
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || limit < 0 || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLockLost) || ctx.Err() != nil {
			return err
		}
		if start.IsZero() {
			start = time.Now()
		}
		if spent := time.Since(start); spent+backoff > limit {
			return fmt.Errorf("failover: %s: still failing after %d attempts in %s: %w", what, attempt, spent.Round(time.Millisecond), err)
		}
		r.report(s, "retry", fmt.Sprintf("%s failed (%v); trying again in %s", what, err, backoff), nil)
		if clock.Sleep(ctx, clock.Real(), backoff) != nil {
			return err
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (r *Runner) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// Run feeds ev (EvStart for a new cutover, EvResume to continue a recorded
// one, or an operator command) to the state machine and performs actions
// until the cutover holds or ends. It returns the last recorded state. An
// error means the runner stopped midway (ctx ended, the lock was lost, etcd
// failed): the record says where, and a new Run with EvResume continues.
func (r *Runner) Run(ctx context.Context, s *State, ev Event) (*State, error) {
	if r.Mover == nil {
		r.Mover = NoneMover{}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := r.Control.Commands(cctx, s.ID)
	// Finish any prune a crashed runner left behind.
	r.prune(ctx, s)
	saved := false
	var msg *CommandMsg
	for {
		next, acts, err := Step(s, ev)
		if err != nil {
			if msg == nil {
				return s, err
			}
			// A stale or impossible command: say so, drop it, go on.
			r.report(s, "command", fmt.Sprintf("%s by %s ignored: %v", msg.Command, msg.Who, err), nil)
			acts = s.action()
			next = s
		}
		if !saved && next != s {
			if err := r.retry(ctx, s, "save", func() error { return r.Control.Save(ctx, next) }); err != nil {
				return s, fmt.Errorf("failover: save cutover %s: %w", s.ID, err)
			}
		}
		if msg != nil {
			m := *msg
			if err := r.retry(ctx, next, "consume "+string(m.Command), func() error { return r.Control.Consumed(ctx, s.ID, m) }); err != nil {
				return next, err
			}
		}
		s = next
		r.report(s, "step", describe(s, ev), nil)
		if len(acts) == 0 {
			r.prune(ctx, s)
			r.report(s, "end", s.Reason, nil)
			return s, nil
		}
		a := acts[0]
		if r.BeforeAction != nil {
			if err := r.BeforeAction(s, a); err != nil {
				return s, err
			}
		}
		s, ev, saved, msg, err = r.perform(cctx, s, a, cmds)
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return s, err
		}
		if a.Kind == ActApplyMap && a.Change.Op == OpFlip && ev.Kind == EvApplied {
			r.prune(ctx, s)
		}
	}
}

// prune lets a copying mover delete what the flips it has seen moved away
// (see Pruner). Failures are reported and otherwise ignored.
func (r *Runner) prune(ctx context.Context, s *State) {
	p, ok := r.Mover.(Pruner)
	if !ok || ctx.Err() != nil {
		return
	}
	t, err := r.Control.Table(ctx)
	if err != nil {
		r.report(s, "data", r.Mover.Name()+": prune skipped: read map: "+err.Error(), nil)
		return
	}
	how, err := p.Prune(ctx, s.ID, t)
	if err != nil {
		r.report(s, "data", r.Mover.Name()+": prune failed (the rows stay behind the guards; the next runner retries): "+err.Error(), nil)
		return
	}
	if how != "" {
		r.report(s, "data", r.Mover.Name()+": "+how, nil)
	}
}

// perform does one action and returns the state to feed its event to (a
// pause recorded during a wait changes it) and the event. saved reports
// that the state after the event is already stored (map edits store it in
// their own transaction). An operator command that interrupts a wait is
// returned as the event instead, with its message.
func (r *Runner) perform(ctx context.Context, s *State, a Action, cmds <-chan CommandMsg) (*State, Event, bool, *CommandMsg, error) {
	if a.Kind == ActApplyMap {
		ev, saved, err := r.apply(ctx, s, a)
		return s, ev, saved, nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan Event, 1)
	waiting := s.Clone() // the wait reads its own copy
	go func() { done <- r.wait(actx, waiting, a) }()
	for {
		select {
		case ev := <-done:
			if ctx.Err() != nil {
				return s, Event{}, false, nil, context.Cause(ctx)
			}
			return s, ev, false, nil, nil
		case m, ok := <-cmds:
			if !ok {
				cmds = nil
				continue
			}
			kind := commandEvent(m.Command)
			if kind == "" {
				r.report(s, "command", fmt.Sprintf("unknown command %q by %s ignored", m.Command, m.Who), nil)
				if err := r.retry(ctx, s, "consume "+string(m.Command), func() error { return r.Control.Consumed(ctx, s.ID, m) }); err != nil {
					return s, Event{}, false, nil, err
				}
				continue
			}
			ev := Event{Kind: kind, At: r.now(), Detail: commandDetail(m)}
			if kind == EvPause {
				// A pause waits for the stage boundary: record it, keep waiting.
				next, _, err := Step(s, ev)
				if err == nil {
					if err := r.retry(ctx, s, "save", func() error { return r.Control.Save(ctx, next) }); err != nil {
						return s, Event{}, false, nil, err
					}
					s = next
					r.report(s, "command", "pause requested by "+m.Who+"; the cutover stops after this stage", nil)
				}
				if err := r.retry(ctx, s, "consume "+string(m.Command), func() error { return r.Control.Consumed(ctx, s.ID, m) }); err != nil {
					return s, Event{}, false, nil, err
				}
				continue
			}
			cancel()
			<-done
			return s, ev, false, &m, nil
		}
	}
}

func commandEvent(c Command) EventKind {
	switch c {
	case CmdPause:
		return EvPause
	case CmdAbort:
		return EvAbort
	case CmdRollback:
		return EvRollback
	}
	return ""
}

func commandDetail(m CommandMsg) string {
	d := m.Who
	if m.Why != "" {
		d += ": " + m.Why
	}
	return d
}

// apply performs an apply-map action.
func (r *Runner) apply(ctx context.Context, s *State, a Action) (Event, bool, error) {
	at := r.now()
	reason := fmt.Sprintf("cutover %s stage %s: %s (%s)", s.ID, s.StageName(), a.Change.Op, s.Why)
	r.report(s, "step", fmt.Sprintf("%s: %d slots, %d keys", a.Change.Op, a.Change.Move.SlotCount(), len(a.Change.Move.Keys)), &a)
	var epoch uint64
	err := r.retry(ctx, s, string(a.Change.Op), func() (err error) {
		epoch, err = r.Control.ApplyChange(ctx, reason, *a.Change, func(epoch uint64) (*State, error) {
			n, _, err := Step(s, Event{Kind: EvApplied, At: at, Epoch: epoch})
			return n, err
		})
		return err
	})
	switch {
	case err == nil:
		return Event{Kind: EvApplied, At: at, Epoch: epoch}, true, nil
	case errors.Is(err, ErrMapChanged):
		return Event{Kind: EvApplyFailed, At: r.now(), Detail: err.Error()}, false, nil
	}
	return Event{}, false, fmt.Errorf("failover: cutover %s: %s: %w", s.ID, a.Change.Op, err)
}

// wait performs a wait action (barrier, data gate, verify) and returns its
// event; when ctx ends first the event does not matter.
func (r *Runner) wait(ctx context.Context, s *State, a Action) Event {
	switch a.Kind {
	case ActWaitAcks:
		tctx, cancel := context.WithTimeout(ctx, a.Timeout)
		defer cancel()
		err := r.Control.WaitAcks(tctx, a.Epoch, func(b Barrier) {
			r.report(s, "barrier", fmt.Sprintf("acks %d/%d of epoch %d", b.Acked, b.Expected, b.Epoch), nil, withBarrier(b))
		})
		if err != nil {
			return Event{Kind: EvAcksTimeout, At: r.now(), Detail: err.Error()}
		}
		return Event{Kind: EvAcked, At: r.now()}
	case ActWaitData:
		tctx, cancel := context.WithTimeout(ctx, a.Timeout)
		defer cancel()
		how, err := r.Mover.WaitData(tctx, s.ID, *a.Move)
		if err != nil {
			return Event{Kind: EvDataFailed, At: r.now(), Detail: r.Mover.Name() + ": " + err.Error()}
		}
		r.report(s, "data", r.Mover.Name()+": "+how, nil)
		return Event{Kind: EvDataReady, At: r.now(), Detail: how}
	case ActVerify:
		return r.verify(ctx, s, a)
	}
	return Event{Kind: EvDataFailed, At: r.now(), Detail: "unknown action " + string(a.Kind)}
}

// verify bakes for a.Timeout, checking every gate each GateInterval; the
// first failed check fails the stage.
func (r *Runner) verify(ctx context.Context, s *State, a Action) Event {
	since := s.Stages[s.Stage].FlippedAt
	if since.IsZero() {
		since = r.now()
	}
	deadline := r.now().Add(max(a.Timeout, 0))
	every := r.GateInterval
	if every <= 0 {
		every = time.Second
	}
	for {
		in := GateInput{Cutover: s.ID, Stage: s.StageName(), Move: *a.Move, Since: since}
		if t, err := r.Control.Table(ctx); err == nil {
			in.Table = t
		}
		var results []GateResult
		var failed []string
		for _, g := range r.Gates {
			res := g.Check(ctx, in)
			if res.Gate == "" {
				res.Gate = g.Name()
			}
			results = append(results, res)
			if !res.OK {
				failed = append(failed, res.String())
			}
		}
		if ctx.Err() != nil {
			return Event{Kind: EvVerifyFailed, At: r.now(), Detail: "interrupted"}
		}
		left := deadline.Sub(r.now())
		msg := fmt.Sprintf("gates hold, %s of bake left", max(left, 0).Round(100*time.Millisecond))
		if len(r.Gates) == 0 {
			msg = fmt.Sprintf("no gates; baking, %s left", max(left, 0).Round(100*time.Millisecond))
		}
		if len(failed) > 0 {
			msg = "gate failed: " + strings.Join(failed, "; ")
		}
		r.report(s, "gate", msg, nil, withGates(results))
		if len(failed) > 0 {
			return Event{Kind: EvVerifyFailed, At: r.now(), Detail: strings.Join(failed, "; ")}
		}
		if left <= 0 {
			return Event{Kind: EvVerified, At: r.now()}
		}
		t := time.NewTimer(min(every, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return Event{Kind: EvVerifyFailed, At: r.now(), Detail: "interrupted"}
		case <-t.C:
		}
	}
}

type progressOpt func(*Progress)

func withBarrier(b Barrier) progressOpt    { return func(p *Progress) { p.Barrier = &b } }
func withGates(g []GateResult) progressOpt { return func(p *Progress) { p.Gates = g } }

func (r *Runner) report(s *State, kind, msg string, a *Action, opts ...progressOpt) {
	if r.OnProgress == nil {
		return
	}
	p := Progress{
		At: r.now(), Cutover: s.ID, Kind: kind, Status: s.Status, Stage: s.Stage + 1, Stages: len(s.Plan.Stages),
		StageName: s.StageName(), Step: s.Step, Message: msg, Action: a,
	}
	if s.Frozen() && s.Rollback == nil {
		if at := s.Stages[s.Stage].FrozenAt; !at.IsZero() && s.Stages[s.Stage].FlippedAt.IsZero() {
			p.FrozenFor = p.At.Sub(at)
		}
	}
	for _, o := range opts {
		o(&p)
	}
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.OnProgress(p)
}

// describe says in words what an event did.
func describe(s *State, ev Event) string {
	switch ev.Kind {
	case EvApplied:
		return fmt.Sprintf("map at epoch %d", ev.Epoch)
	case EvAcked:
		return "every live guard acked"
	case EvDataReady:
		return "data gate passed"
	case EvVerified:
		return "stage verified"
	}
	if ev.Detail != "" {
		return string(ev.Kind) + ": " + ev.Detail
	}
	return string(ev.Kind)
}
