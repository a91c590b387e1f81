package labdrill

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/lab"
)

// cutover runs a planned cutover (or moves the last one back).
func (r *runner) cutover(ctx context.Context, s *drill.CutoverStep) error {
	if err := r.idle(); err != nil {
		return err
	}
	ctrl, err := r.l.NewController(ctx)
	if err != nil {
		return err
	}
	t, err := r.l.Table(ctx)
	if err != nil {
		ctrl.Close()
		return err
	}
	var p *failover.Plan
	from, to := s.From, s.To
	if s.Back {
		if r.lastDone == nil {
			ctrl.Close()
			return fmt.Errorf("%w: back: no cutover finished before", ErrStep)
		}
		p = r.lastDone.Plan.Reverse(t.Epoch())
		from, to = strings.Join(p.From, ","), strings.Join(p.To, ",")
	} else {
		stages, err := failover.ParseStages(s.Stages)
		if err != nil {
			ctrl.Close()
			return fmt.Errorf("%w: %v", ErrStep, err)
		}
		if p, err = failover.NewPlan(t, failover.Request{From: failover.Endpoints{IDCs: []string{s.From}}, To: failover.Endpoints{IDCs: []string{s.To}}, Stages: stages}); err != nil {
			ctrl.Close()
			return fmt.Errorf("%w: %v", ErrStep, err)
		}
	}
	bake := s.Bake.D()
	if bake == 0 {
		bake = 500 * time.Millisecond
	}
	opts := failover.Options{Auto: true, Bake: bake, BarrierTimeout: 30 * time.Second, DataTimeout: 60 * time.Second}
	id := s.ID
	if id == "" {
		id = failover.NewID("cut", time.Now())
	}
	st := failover.NewState(id, "drill", "drill "+r.sc.Name, p, opts, time.Now())
	return r.launch(ctx, "cutover", from, to, ctrl, st, s.Background)
}

// failover runs an emergency failover of a lost IDC.
func (r *runner) failover(ctx context.Context, s *drill.FailoverStep) error {
	if err := r.idle(); err != nil {
		return err
	}
	if r.l.Config().Mover == lab.MoverCopy {
		return fmt.Errorf("%w: an emergency failover needs replicated databases (db: mariadb): the copy mover cannot read a lost IDC's books", ErrStep)
	}
	if s.SemiSyncOff && r.my != nil {
		// The survivor's semi-sync master waits for a replica that is
		// gone: its writes hang until it stops waiting (a DBA's first
		// step when an IDC is lost).
		for _, srv := range r.my.Servers() {
			if srv == lab.ServerOf(s.From) || !r.my.Running(srv) {
				continue
			}
			if err := r.my.SetSemiSync(ctx, srv, false); err != nil {
				return err
			}
			r.event("note", "semi-sync switched off on "+srv+" (its replica in "+s.From+" is lost)")
		}
	}
	ctrl, err := r.l.NewController(ctx)
	if err != nil {
		return err
	}
	ctrl.Emergency = true
	window := s.Window.D()
	if window == 0 {
		window = time.Second
	}
	alive, err := ctrl.Alive(ctx, r.l.CellsOf(s.From), window)
	if err != nil {
		ctrl.Close()
		return err
	}
	if len(alive) > 0 {
		if !s.Force {
			ctrl.Close()
			return fmt.Errorf("%w: %s is alive (%s show signs of life): a planned cutover is the tool, or force", ErrStep, s.From, strings.Join(alive, ", "))
		}
		r.event("note", "forced over live guards: "+strings.Join(alive, ", "))
	}
	r.event("note", fmt.Sprintf("liveness check of %s over %v: no sign of life", s.From, window))
	p, err := ctrl.FailoverPlan(ctx, s.From, s.To)
	if err != nil {
		ctrl.Close()
		return fmt.Errorf("%w: %v", ErrStep, err)
	}
	opts := failover.Options{Auto: true, Emergency: true, Bake: 500 * time.Millisecond, BarrierTimeout: 60 * time.Second, DataTimeout: 60 * time.Second}
	st := failover.NewState(failover.NewID("failover", time.Now()), "drill", "drill "+r.sc.Name+": "+s.From+" lost", p, opts, time.Now())
	return r.launch(ctx, "failover", s.From, s.To, ctrl, st, s.Background)
}

// resume continues the last cutover, whose controller was killed, from a
// new controller.
func (r *runner) resume(ctx context.Context, s *drill.ResumeStep) error {
	c := r.cut
	if c == nil || !c.killed {
		return fmt.Errorf("%w: resume: no cutover lost its controller", ErrStep)
	}
	ctrl, err := r.l.NewController(ctx)
	if err != nil {
		return err
	}
	timeout := s.Timeout.D()
	if timeout == 0 {
		timeout = time.Minute
	}
	r.event("cutover", fmt.Sprintf("resuming %s from a new controller (waiting for the dead one's lock to expire)", c.id))
	nc := &cutRun{idx: c.idx, kind: c.kind, id: c.id, from: c.from, ctrl: ctrl}
	r.cut = nc
	rctx, cancel := context.WithTimeout(ctx, timeout+2*time.Minute)
	defer cancel()
	final, err := ctrl.Run(rctx, &failover.State{ID: c.id}, failover.Event{Kind: failover.EvResume, At: time.Now(), Detail: "drill"}, false, timeout,
		nil, r.progress(nc))
	ctrl.Close()
	nc.final, nc.err = final, err
	r.recordEnd(nc)
	if err != nil {
		return err
	}
	return nil
}

func (r *runner) idle() error {
	if c := r.cut; c != nil && c.done != nil {
		select {
		case <-c.done:
		default:
			return fmt.Errorf("%w: a cutover is still running (wait until cutover-done first)", ErrStep)
		}
	}
	return nil
}

func (r *runner) progress(c *cutRun) func(failover.Progress) {
	return func(p failover.Progress) {
		r.mu.Lock()
		changed := c.stage != p.Stage-1 || c.step != string(p.Step)
		c.stage, c.step = p.Stage-1, string(p.Step)
		if c.reached == nil {
			c.reached = map[string]bool{}
		}
		c.reached[string(p.Step)] = true
		r.mu.Unlock()
		switch p.Kind {
		case "step":
			if changed && (p.Step == failover.StepFreeze || p.Step == failover.StepFlip) {
				r.event("cutover", fmt.Sprintf("%s stage %d/%d (%s): %s", c.id, p.Stage, p.Stages, p.StageName, p.Step))
			}
		case "retry":
			r.event("cutover", fmt.Sprintf("%s: %s", c.id, p.Message))
		case "end":
			r.event("cutover", fmt.Sprintf("%s: %s %s", c.id, p.Status, p.Message))
		}
	}
}

// launch runs st, in the foreground or the background.
func (r *runner) launch(ctx context.Context, kind, from, to string, ctrl *lab.Controller, st *failover.State, background bool) error {
	c := &cutRun{kind: kind, id: st.ID, from: from, ctrl: ctrl, idx: len(r.rep.Cutovers)}
	r.rep.Cutovers = append(r.rep.Cutovers, drill.CutoverInfo{ID: st.ID, Kind: kind, From: from, To: to, Status: "running", Started: time.Now()})
	r.cut = c
	cctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	c.done = make(chan struct{})
	r.event("cutover", fmt.Sprintf("%s %s: %s -> %s in %d stage(s)", kind, st.ID, from, to, len(st.Plan.Stages)))
	onControl := func(ctl *etcdcutover.Control) {
		r.mu.Lock()
		c.ctl = ctl
		r.mu.Unlock()
	}
	run := func() {
		defer close(c.done)
		final, err := ctrl.Run(cctx, st, failover.Event{Kind: failover.EvStart, At: time.Now()}, true, 30*time.Second, onControl, r.progress(c))
		r.mu.Lock()
		killed := c.killed
		r.mu.Unlock()
		// A controller that stopped midway on an etcd error (a leader
		// change, its lock lost) leaves the cutover running: resume it from
		// a new controller, as the operator would (`cellctl cutover
		// resume`), at most three times. The timeline shows each.
		for try := 0; !killed && err != nil && cctx.Err() == nil && final != nil && final.Status == failover.StatusRunning && try < 3; try++ {
			r.event("cutover", fmt.Sprintf("%s: the controller stopped midway (%v); resuming from a new controller", st.ID, err))
			ctrl.Close()
			if ctrl, err = r.l.NewController(cctx); err != nil {
				break
			}
			ctrl.Emergency = kind == "failover"
			r.mu.Lock()
			c.ctrl = ctrl
			r.mu.Unlock()
			final, err = ctrl.Run(cctx, &failover.State{ID: st.ID}, failover.Event{Kind: failover.EvResume, At: time.Now(), Detail: "drill"}, false, 30*time.Second, onControl, r.progress(c))
			r.mu.Lock()
			killed = c.killed
			r.mu.Unlock()
		}
		c.final, c.err = final, err
		if killed {
			return
		}
		if ctrl != nil {
			ctrl.Close()
		}
		r.recordEnd(c)
		if err == nil && final.Status == failover.StatusDone {
			if kind == "cutover" {
				r.lastDone = final
			} else {
				r.l.MarkLost(from)
			}
		}
	}
	if background {
		go run()
		return nil
	}
	run()
	if c.err != nil {
		return c.err
	}
	if c.final.Status != failover.StatusDone {
		return fmt.Errorf("%w: %s %s ended %s: %s", ErrStep, kind, st.ID, c.final.Status, c.final.Reason)
	}
	return nil
}

// recordEnd fills the report's line for a finished cutover.
func (r *runner) recordEnd(c *cutRun) {
	r.mu.Lock()
	defer r.mu.Unlock()
	info := &r.rep.Cutovers[c.idx]
	info.Ended = time.Now()
	if c.err != nil {
		info.Status, info.Reason = "error", c.err.Error()
		return
	}
	info.Status, info.Reason = string(c.final.Status), c.final.Reason
	info.Windows = nil
	for _, s := range c.final.Stages {
		if s.Flipped {
			info.Windows = append(info.Windows, drill.Duration(s.Window))
		}
	}
	if c.kind == "failover" && c.final.Status == failover.StatusDone {
		r.l.MarkLost(c.from)
		r.lostIDCs = append(r.lostIDCs, c.from)
	}
}
