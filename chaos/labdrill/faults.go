package labdrill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/chaos/procfault"
	"github.com/cellkit/cellkit/chaos/reqfault"
	"github.com/cellkit/cellkit/lab"
)

// inject applies a fault and records it.
func (r *runner) inject(ctx context.Context, i int, f *drill.Fault) error {
	name := f.Name
	if name == "" {
		name = fmt.Sprintf("%s-%d", f.Kind, i+1)
	}
	if _, dup := r.faults[name]; dup {
		return fmt.Errorf("%w: a fault named %s was injected already", ErrStep, name)
	}
	cells, err := r.cellsOfTarget(f.Target)
	if err != nil {
		return err
	}
	affected, err := r.affectedOwners(ctx, cells)
	if err != nil {
		return err
	}
	a := &active{kind: f.Kind, cells: cells, affected: affected}
	detail, err := r.apply(ctx, f, a)
	if err != nil {
		return err
	}
	rec := drill.FaultRecord{Name: name, Kind: f.Kind, Target: f.Target, Paths: f.Paths, Injected: time.Now(), Detail: detail}
	a.idx = len(r.rep.Faults)
	r.rep.Faults = append(r.rep.Faults, rec)
	r.faults[name] = a
	r.order = append(r.order, name)
	r.event("fault", fmt.Sprintf("%s: %s %s: %s", name, f.Kind, f.Target, detail))
	if a.heal == nil {
		a.healed = true
		now := time.Now()
		r.rep.Faults[a.idx].Healed = &now
	}
	if f.For > 0 && a.heal != nil {
		go func() {
			time.Sleep(f.For.D())
			r.autoHeal(name)
		}()
	}
	return nil
}

func (r *runner) autoHeal(name string) {
	r.mu.Lock()
	a := r.faults[name]
	done := a.healed
	r.mu.Unlock()
	if !done {
		r.healOne(context.Background(), name)
	}
}

func (r *runner) server(target string) (string, error) {
	_, idc, _ := strings.Cut(target, ":")
	if r.my == nil {
		return "", fmt.Errorf("%w: %s needs the MariaDB lab (this drill runs on %s)", ErrStep, target, r.db)
	}
	return lab.ServerOf(idc), nil
}

// apply performs the fault and sets a.heal (nil: nothing to heal).
func (r *runner) apply(ctx context.Context, f *drill.Fault, a *active) (string, error) {
	kind, name, _ := strings.Cut(f.Target, ":")
	switch f.Kind {
	case "kill":
		return r.kill(ctx, kind, name, a)
	case "stop", "cont", "pulse":
		srv, err := r.server(f.Target)
		if err != nil {
			return "", err
		}
		pid := r.my.PID(srv)
		if pid == 0 {
			return "", fmt.Errorf("%w: server %s is not running", ErrStep, srv)
		}
		switch f.Kind {
		case "stop":
			if err := procfault.Stop(pid); err != nil {
				return "", err
			}
			a.heal = func(context.Context) error { return procfault.Cont(pid) }
			return fmt.Sprintf("SIGSTOP to mariadbd %s (pid %d)", srv, pid), nil
		case "cont":
			return fmt.Sprintf("SIGCONT to mariadbd %s (pid %d)", srv, pid), procfault.Cont(pid)
		}
		p, err := procfault.StartPulse(pid, f.StopFor.D(), f.Every.D())
		if err != nil {
			return "", err
		}
		a.heal = func(context.Context) error { _, err := p.End(); return err }
		return fmt.Sprintf("mariadbd %s (pid %d) stopped %v of every %v", srv, pid, f.StopFor, f.Every), nil
	case "restart":
		return r.restart(ctx, kind, name)
	case "partition", "latency", "bandwidth", "reset":
		idc, cell := name, ""
		if kind == "cell" {
			idc, cell = r.l.IDCOf(name), name
		}
		ps, err := r.l.ProxiesFor(idc, cell, f.Paths)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrStep, err)
		}
		if len(ps) == 0 {
			return "", fmt.Errorf("%w: no proxy on paths %v of %s", ErrStep, f.Paths, f.Target)
		}
		var names []string
		for _, p := range ps {
			var err error
			switch f.Kind {
			case "partition":
				err = p.Blackhole()
			case "latency":
				err = p.Latency(f.Latency.D(), f.Jitter.D())
			case "bandwidth":
				err = p.Bandwidth(f.RateKBps)
			case "reset":
				err = p.Reset()
			}
			if err != nil {
				return "", err
			}
			names = append(names, p.Name())
		}
		a.heal = func(context.Context) error {
			var errs []error
			for _, p := range ps {
				errs = append(errs, p.Heal())
			}
			return errors.Join(errs...)
		}
		return fmt.Sprintf("%s on %s", describeNet(f), strings.Join(names, ", ")), nil
	case "request":
		return r.requestFault(ctx, f, kind, name, a)
	case "etcd-stop":
		c := r.l.EtcdCluster
		if c == nil {
			return "", fmt.Errorf("%w: etcd-stop needs lab.etcdMembers: 3", ErrStep)
		}
		i := 0
		if name == "leader" {
			var err error
			if i, err = c.Leader(ctx); err != nil {
				return "", err
			}
		} else {
			var err error
			if i, err = strconv.Atoi(name); err != nil || i < 0 || i >= c.Size() {
				return "", fmt.Errorf("%w: etcd member %q (0..%d)", ErrStep, name, c.Size()-1)
			}
		}
		if err := c.Stop(i); err != nil {
			return "", err
		}
		a.heal = func(ctx context.Context) error { return c.Start(ctx, i) }
		return fmt.Sprintf("etcd member %d stopped (%s)", i, map[bool]string{true: "the leader", false: "a follower"}[name == "leader"]), nil
	}
	return "", fmt.Errorf("%w: fault kind %q", ErrStep, f.Kind)
}

func describeNet(f *drill.Fault) string {
	switch f.Kind {
	case "partition":
		return "blackhole"
	case "latency":
		return fmt.Sprintf("latency %v±%v", f.Latency, f.Jitter)
	case "bandwidth":
		return fmt.Sprintf("bandwidth %d KB/s", f.RateKBps)
	}
	return f.Kind
}

func (r *runner) kill(ctx context.Context, kind, name string, a *active) (string, error) {
	switch kind {
	case "idc", "cell":
		cells := []string{name}
		if kind == "idc" {
			cells = r.l.CellsOf(name)
		}
		var done []string
		// The database first: a power loss takes the server with the
		// cells, and nothing a crashing cell still sends may land.
		if kind == "idc" && r.my != nil {
			srv := lab.ServerOf(name)
			if err := r.my.Kill(srv); err != nil {
				return "", err
			}
			a.killedDB = srv
			done = append(done, "mariadbd "+srv+" (SIGKILL)")
		}
		for _, c := range cells {
			if err := r.l.CrashCell(c); err != nil {
				return "", err
			}
			done = append(done, "cell "+c+" (crashed)")
		}
		if kind == "idc" {
			// The IDC's network goes dark with it: what was still in
			// flight on its links (replication on its way to the other
			// IDC, say) is lost with it.
			ps, err := r.l.ProxiesFor(name, "", nil)
			if err != nil {
				return "", err
			}
			for _, p := range ps {
				if err := p.Reset(); err != nil {
					return "", err
				}
			}
			done = append(done, fmt.Sprintf("its %d network links (in-flight data dropped)", len(ps)))
		}
		a.heal = func(ctx context.Context) error {
			if a.killedDB != "" {
				return fmt.Errorf("%s's server was killed: it is not restarted by the drill (after a failover its data is no longer the truth; bring it back as a replica by hand)", name)
			}
			for _, c := range cells {
				if _, err := r.l.StartCell(ctx, c); err != nil {
					return err
				}
			}
			return nil
		}
		return "killed " + strings.Join(done, ", "), nil
	case "db":
		srv := lab.ServerOf(name)
		if r.my == nil {
			return "", fmt.Errorf("%w: db:%s needs the MariaDB lab", ErrStep, name)
		}
		if err := r.my.Kill(srv); err != nil {
			return "", err
		}
		a.killedDB = srv
		a.heal = func(ctx context.Context) error { return r.my.Restart(ctx, srv) }
		return "killed mariadbd " + srv + " (SIGKILL)", nil
	case "router":
		r.l.StopRouter(true)
		a.heal = func(ctx context.Context) error { return r.l.StartRouter(ctx) }
		return "cellrouter crashed (clients' connections reset)", nil
	case "controller":
		c := r.cut
		if c == nil || c.done == nil {
			return "", fmt.Errorf("%w: no cutover is running: nothing to kill", ErrStep)
		}
		r.killController(c)
		return fmt.Sprintf("the controller running %s crashed at stage %d step %s (its lock's lease left to expire)", c.id, c.stage+1, c.step), nil
	}
	return "", fmt.Errorf("%w: kill %s", ErrStep, kind)
}

// killController stops a cutover's controller as kill -9 would: its etcd
// connections are reset, it writes nothing more, its lock's lease is left
// to expire.
func (r *runner) killController(c *cutRun) {
	r.mu.Lock()
	ctl := c.ctl
	c.killed = true
	r.mu.Unlock()
	ps := r.l.ControllerProxies()
	for _, p := range ps {
		_ = p.Reset()
	}
	if ctl != nil {
		ctl.Abandon()
	}
	c.cancel()
	<-c.done
	c.ctrl.Close()
	for _, p := range ps {
		_ = p.Heal()
	}
	c.done = nil
}

func (r *runner) restart(ctx context.Context, kind, name string) (string, error) {
	switch kind {
	case "cell":
		if _, err := r.l.StartCell(ctx, name); err != nil {
			return "", err
		}
		return "cell " + name + " restarted", nil
	case "idc":
		for _, c := range r.l.CellsOf(name) {
			if _, err := r.l.StartCell(ctx, c); err != nil {
				return "", err
			}
		}
		return "cells of " + name + " restarted", nil
	case "db":
		if r.my == nil {
			return "", fmt.Errorf("%w: db:%s needs the MariaDB lab", ErrStep, name)
		}
		return "mariadbd " + lab.ServerOf(name) + " restarted", r.my.Restart(ctx, lab.ServerOf(name))
	case "router":
		r.l.StopRouter(false)
		return "cellrouter restarted", r.l.StartRouter(ctx)
	case "etcd":
		c := r.l.EtcdCluster
		if c == nil {
			return "", fmt.Errorf("%w: etcd restarts need lab.etcdMembers: 3", ErrStep)
		}
		i, err := strconv.Atoi(name)
		if name == "leader" {
			i, err = c.Leader(ctx)
		}
		if err != nil || i < 0 || i >= c.Size() {
			return "", fmt.Errorf("%w: etcd member %q", ErrStep, name)
		}
		if err := c.Stop(i); err != nil {
			return "", err
		}
		return fmt.Sprintf("etcd member %d restarted", i), c.Start(ctx, i)
	}
	return "", fmt.Errorf("%w: restart %s", ErrStep, kind)
}

func (r *runner) requestFault(ctx context.Context, f *drill.Fault, kind, name string, a *active) (string, error) {
	e := reqfault.Experiment{Name: "drill-" + strings.ToLower(strings.ReplaceAll(f.Name, "_", "-")), Fraction: f.Fraction,
		Methods: f.Methods, ShadowOnly: f.ShadowOnly, Latency: reqfault.Duration(f.Latency.D()), Jitter: reqfault.Duration(f.Jitter.D()),
		HTTPStatus: f.Code, Abort: f.Abort, Who: "drill " + r.sc.Name, Why: "drill step"}
	if f.Name == "" {
		e.Name = fmt.Sprintf("drill-%d", len(r.order)+1)
	}
	switch kind {
	case "idc":
		e.IDCs = []string{name}
	case "cell":
		e.Cells = []string{name}
	}
	ttl := f.For.D()
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	e.ExpiresAt = time.Now().Add(ttl)
	if err := reqfault.Put(ctx, r.l.Client, r.l.Config().Cluster, e); err != nil {
		return "", err
	}
	a.heal = func(ctx context.Context) error {
		_, err := reqfault.Delete(ctx, r.l.Client, r.l.Config().Cluster, e.Name)
		return err
	}
	return fmt.Sprintf("experiment %s in etcd (expires %s)", e.Name, e.ExpiresAt.Format(time.TimeOnly)), nil
}

// healStep heals one fault by name, or all.
func (r *runner) healStep(ctx context.Context, h *drill.HealStep) error {
	if !h.All {
		if _, ok := r.faults[h.Name]; !ok {
			return fmt.Errorf("%w: no fault named %s", ErrStep, h.Name)
		}
		return r.healOne(ctx, h.Name)
	}
	var errs []error
	for _, name := range r.order {
		if a := r.faults[name]; !a.healed && !(a.kind == "kill" && a.killedDB != "") {
			errs = append(errs, r.healOne(ctx, name))
		}
	}
	return errors.Join(errs...)
}

func (r *runner) healOne(ctx context.Context, name string) error {
	r.mu.Lock()
	a := r.faults[name]
	if a.healed || a.heal == nil {
		r.mu.Unlock()
		return nil
	}
	a.healed = true
	r.mu.Unlock()
	err := a.heal(ctx)
	now := time.Now()
	r.mu.Lock()
	r.rep.Faults[a.idx].Healed = &now
	r.mu.Unlock()
	if err != nil {
		r.event("error", fmt.Sprintf("heal %s: %v", name, err))
		return err
	}
	r.event("heal", name+" healed")
	return nil
}
