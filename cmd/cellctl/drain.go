package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

func (a *app) newDrainCmd() *cobra.Command {
	var (
		pf     planFlags
		of     optionFlags
		rf     runFlags
		dry    bool
		idFlag string
	)
	cmd := &cobra.Command{
		Use:   "drain CELL --reason WHY [--to-cell CELL,... | --to-idc IDC] [--auto] [--dry-run]",
		Short: "Move every slot and whitelisted key of a cell away, then mark it offline",
		Long: `Move every slot and whitelisted key of a cell to other cells with a staged
cutover, then mark the cell offline (with the last flip, in the same map edit).

First the cell is marked draining (it still serves what it owns), with the
reason in the audit log. The targets are --to-cell or --to-idc, by default every
other active cell, balanced by slot count. The keys whitelisted to the cell move
in the whitelist stage (or, without one, with the last stage). Everything else is as 'cutover start': --auto,
--bake, the gates, progress, 'cutover resume|pause|abort|rollback ID'.

A fenced cell is not drained (its guards cannot ack): mark it active first or
fail its IDC over.`,
		Example: `  cellctl drain a2 --reason "maintenance window OPS-1234" --dry-run
  cellctl drain a2 --to-cell a1 --auto --bake 30s --reason "maintenance window OPS-1234"`,
		Args: exactArgs(1, "the cell to drain"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cell := args[0]
			if err := a.requireReason(); err != nil {
				return err
			}
			if err := checkName("cell", cell); err != nil {
				return err
			}
			to, err := endpointsOf("to", pf.toIDC, pf.toCell, false)
			if err != nil {
				return err
			}
			stages, canaries, err := pf.stageSpecs()
			if err != nil {
				return err
			}
			if last := stages[len(stages)-1]; last.Whitelist || last.Fraction.Num != last.Fraction.Den {
				// The last flip marks the cell offline, which the map
				// refuses while the cell still owns something.
				return usagef("--stages %q: a drain moves everything, so its last stage must be 1", pf.stages)
			}
			opts, err := of.options()
			if err != nil {
				return err
			}
			opts.Drain = true
			if err := rf.check(); err != nil {
				return err
			}
			defer rf.close()
			if idFlag != "" {
				if err := checkCutoverID("--id", idFlag); err != nil {
					return err
				}
			}
			request := func(t *router.Table) (failover.Request, error) {
				return drainRequest(t, cell, to, stages, canaries)
			}
			if dry {
				return a.dryRun(request, &dryRunNote{options: opts.WithDefaults(), run: rf.describe() + "; then " + cell + " goes offline"})
			}
			spec := &launchSpec{kind: "drain", id: idFlag, opts: opts, why: a.reason, request: request}
			spec.prepare = func(_ *session, ctl *etcdcutover.Control, t *router.Table, _ *failover.Plan) (*router.Table, error) {
				return a.markDraining(ctl, t, cell)
			}
			spec.after = func(_ *session, _ *etcdcutover.Control, st *failover.State, _ error) error {
				if st.Status == failover.StatusDone && a.output == "table" {
					fmt.Fprintf(a.stdout, "\ncell %s owns nothing and is offline; `cellctl cell rm %s --reason WHY` removes it\n", cell, cell)
				}
				return nil
			}
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			return a.launch(s, spec, &rf)
		},
	}
	f := cmd.Flags()
	pf.register(f, false)
	of.register(f, 10*time.Second, 30*time.Second)
	rf.register(f)
	f.BoolVar(&dry, "dry-run", false, "print the plan and the options; change nothing")
	f.StringVar(&idFlag, "id", "", "the cutover's ID (default drain-<UTC time>-<random>)")
	return cmd
}

// drainRequest moves everything cell owns to the targets (default: every
// other active cell).
func drainRequest(t *router.Table, cell string, to failover.Endpoints, stages []failover.StageSpec, canaries []string) (failover.Request, error) {
	c, ok := t.Cell(cell)
	if !ok {
		return failover.Request{}, usagef("drain: cell %q is not in the map (map epoch %d); `cellctl cell list` shows the cells", cell, t.Epoch())
	}
	switch c.State {
	case router.StateFenced:
		return failover.Request{}, usagef("drain: cell %s is fenced: its guards refuse everything and cannot ack a freeze; mark it active first (`cellctl cell set-state %s active`) or fail its IDC over", cell, cell)
	case router.StateOffline:
		return failover.Request{}, usagef("drain: cell %s is already offline (it owns nothing)", cell)
	}
	if len(to.Cells) == 0 && len(to.IDCs) == 0 {
		for _, o := range t.Cells() {
			if o.ID != cell && o.State == router.StateActive {
				to.Cells = append(to.Cells, o.ID)
			}
		}
		if len(to.Cells) == 0 {
			return failover.Request{}, usagef("drain: no other active cell to move %s's slots to; add one (`cellctl cell add`) or give --to-cell", cell)
		}
	}
	return failover.Request{From: failover.Endpoints{Cells: []string{cell}}, To: to, Stages: stages, Canaries: canaries}, nil
}

// markDraining sets the cell's state to draining (recorded in the audit log
// with the reason) and returns the map after it.
func (a *app) markDraining(ctl *etcdcutover.Control, t *router.Table, cell string) (*router.Table, error) {
	if c, _ := t.Cell(cell); c.State == router.StateDraining {
		return t, nil
	}
	ctx, cancel := a.short()
	defer cancel()
	next, err := ctl.Store().Update(ctx, "drain "+cell+": "+a.reason, func(t *router.Table) error {
		c, ok := t.Cell(cell)
		if !ok {
			return fmt.Errorf("drain: cell %q: %w", cell, router.ErrUnknownCell)
		}
		if c.State != router.StateActive && c.State != router.StateDraining {
			return usagef("drain: cell %s became %s meanwhile", cell, c.State)
		}
		return t.SetCellState(cell, router.StateDraining)
	})
	if errors.Is(err, etcdstore.ErrNoChange) {
		return next, nil
	}
	if err != nil {
		return nil, a.etcdErr(err)
	}
	if a.output == "table" {
		fmt.Fprintf(a.stdout, "cell %s active -> draining (map epoch %d)\n", cell, next.Epoch())
	}
	return next, nil
}
