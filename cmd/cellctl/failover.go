package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/router"
)

// minLivenessWindow is the shortest liveness check allowed: a live guard
// renews its lease every third of its TTL (5s by default) and etcd reports
// time-to-live in whole seconds, so a shorter look could see no sign of
// life from a live guard.
const minLivenessWindow = time.Second

// errCorruptSettings: the cluster's settings document does not decode.
var errCorruptSettings = errors.New("cluster settings are corrupt")

func (a *app) newFailoverCmd() *cobra.Command {
	var (
		fromIDC, toIDC string
		force, confirm bool
		window         time.Duration
		of             optionFlags
		idFlag         string
	)
	cmd := &cobra.Command{
		Use:   "failover --from-idc LOST --to-idc TARGET --reason WHY [--force] [--confirm-idc-down]",
		Short: "Emergency: move every slot of a lost IDC to another IDC in one stage",
		Long: `Emergency failover of a lost IDC: in one stage, freeze every slot (and
whitelisted key) of the lost IDC's cells and mark those cells fenced, wait until
the leases of their guards have expired (a countdown is shown: a guard that
cannot renew its lease has stopped admitting writes by then), pass the data
gate, and flip the slots to the target IDC's active cells.

Before anything is written it checks that the lost IDC is lost: over
--liveness-window it watches the IDC's guards in etcd, and refuses (exit 8) if
any shows a sign of life (an ack moved, a lease renewed): they are alive, so a
planned 'cellctl cutover start' is the tool. --force fails over anyway and
records that it was forced.

A cluster whose settings say self-fencing is off cannot rely on expired leases:
there the failover also needs --confirm-idc-down, the operator's word that the
IDC's cells no longer serve (exit 8 without it).

The keys whitelisted to the lost cells move in the same stage. At the end it
prints the time from the start to the flip and the write-unavailable
window. 'cutover status|resume|abort ID' work on it as on any cutover; it is
not rolled back: bring the IDC back with a planned cutover
(docs/runbooks/failover.md).`,
		Example: `  cellctl failover --from-idc IDC-A --to-idc IDC-B --reason "IDC-A power loss INC-4711"
  cellctl failover --from-idc IDC-A --to-idc IDC-B --confirm-idc-down --reason "IDC-A dark, confirmed by DC ops"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			fromIDC, toIDC = strings.TrimSpace(fromIDC), strings.TrimSpace(toIDC)
			if fromIDC == "" || toIDC == "" {
				return usagef("give the lost IDC with --from-idc and the IDC that takes over with --to-idc")
			}
			if err := checkName("--from-idc", fromIDC); err != nil {
				return err
			}
			if err := checkName("--to-idc", toIDC); err != nil {
				return err
			}
			if fromIDC == toIDC {
				return usagef("--from-idc and --to-idc are both %s: fail over to another IDC", fromIDC)
			}
			if window < minLivenessWindow {
				return usagef("--liveness-window %v: want at least %v (a live guard renews its lease every few seconds; a shorter look may miss it)", window, minLivenessWindow)
			}
			opts, err := of.options()
			if err != nil {
				return err
			}
			opts.Emergency, opts.Auto = true, true
			if idFlag != "" {
				if err := checkCutoverID("--id", idFlag); err != nil {
					return err
				}
			}
			rf := runFlags{mover: "none", gateInterval: time.Second}
			if err := rf.check(); err != nil {
				return err
			}
			return a.failover(fromIDC, toIDC, force, confirm, window, opts, idFlag, &rf)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fromIDC, "from-idc", "", "the lost IDC (required)")
	f.StringVar(&toIDC, "to-idc", "", "the IDC whose active cells take over (required)")
	f.BoolVar(&force, "force", false, "fail over even though guards of the lost IDC show signs of life (recorded)")
	f.BoolVar(&confirm, "confirm-idc-down", false, "confirm the lost IDC's cells no longer serve: required when the cluster runs without self-fencing")
	f.DurationVar(&window, "liveness-window", 3*time.Second, "how long to watch the lost IDC's guards for signs of life before failing over")
	f.DurationVar(&of.bake, "bake", 2*time.Second, "how long to soak after the flip before the failover counts as done; 0 for none")
	f.DurationVar(&of.barrierTimeout, "barrier-timeout", 60*time.Second, "how long to wait for the lost guards' leases to expire (and the live guards to ack) before the freeze is undone")
	f.DurationVar(&of.dataT, "data-timeout", 60*time.Second, "how long the data gate may take")
	f.StringVar(&idFlag, "id", "", "the cutover's ID (default failover-<UTC time>-<random>)")
	return cmd
}

func (a *app) failover(fromIDC, toIDC string, force, confirm bool, window time.Duration, opts failover.Options, id string, rf *runFlags) error {
	// The settings decide whether expired leases prove the IDC stopped.
	s, err := a.connect()
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := a.short()
	settings, err := etcdcutover.LoadSettings(ctx, s.cli, a.cluster)
	cancel()
	if err != nil {
		if errors.Is(err, etcdcutover.ErrCorruptSettings) {
			return fmt.Errorf("cluster %s: %s: %w", a.cluster, message(err), errCorruptSettings)
		}
		return a.etcdErr(err)
	}
	why := a.reason
	if !settings.SelfFencing {
		if !confirm {
			return &hintError{
				fmt.Errorf("cluster %s runs without self-fencing: an expired lease does not prove the guards of %s stopped admitting writes: %w", a.cluster, fromIDC, errRefused),
				fmt.Sprintf("make sure every cell of %s is down (power, network, or stopped), then add --confirm-idc-down", fromIDC),
			}
		}
		why += fmt.Sprintf(" [self-fencing off: %s confirmed down by %s]", fromIDC, a.actor)
	}

	spec := &launchSpec{kind: "failover", id: id, opts: opts}
	spec.request = func(t *router.Table) (failover.Request, error) {
		return failoverRequest(t, fromIDC, toIDC)
	}
	var checked time.Duration
	spec.prepare = func(s *session, _ *etcdcutover.Control, t *router.Table, p *failover.Plan) (*router.Table, error) {
		if a.output == "table" {
			fmt.Fprintf(a.stdout, "watching the guards of %s (%s) for %v for signs of life...\n", fromIDC, strings.Join(p.From, ", "), window)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(a.ctx, window+a.timeout)
		alive, err := etcdcutover.Alive(ctx, s.cli, a.cluster, p.From, window)
		cancel()
		checked = time.Since(start)
		if err != nil {
			return nil, a.etcdErr(err)
		}
		if len(alive) > 0 {
			var names []string
			for _, ack := range alive {
				names = append(names, fmt.Sprintf("%s/%s (acked epoch %d)", ack.Cell, ack.Instance, ack.Epoch))
			}
			if !force {
				return nil, &hintError{
					fmt.Errorf("%s live guard instance(s) in %s: %s; they are alive, so use a planned cutover: %w",
						fmt.Sprint(len(alive)), fromIDC, listSome(names, 5), etcdcutover.ErrAlive),
					fmt.Sprintf("`cellctl cutover start --from-idc %s --to-idc %s --auto --reason WHY` moves the slots without losing a request; if those guards are wrong about being alive (a split), --force fails over anyway", fromIDC, toIDC),
				}
			}
			fmt.Fprintf(a.stderr, "WARNING: --force: %d guard instance(s) of %s show signs of life: %s.\n"+
				"WARNING: failing over anyway; they admit no writes for the moved slots once they apply the freeze or their leases expire.\n",
				len(alive), fromIDC, strings.Join(names, ", "))
			why += fmt.Sprintf(" [forced by %s over %d live guard(s): %s]", a.actor, len(alive), listSome(names, 5))
		}
		spec.why = why
		return t, nil
	}
	spec.why = why
	spec.after = func(_ *session, _ *etcdcutover.Control, st *failover.State, _ error) error {
		if a.output != "table" {
			return nil
		}
		fmt.Fprintln(a.stdout)
		fmt.Fprintf(a.stdout, "liveness check of %s: %s before the start\n", fromIDC, seconds(checked))
		for _, l := range st.Stages {
			if l.Flipped {
				fmt.Fprintf(a.stdout, "flipped %s after the start (map epoch %d); write-unavailable window (freeze→flip) %s\n",
					seconds(l.FlippedAt.Sub(st.Created)), l.FlipEpoch, seconds(l.Window))
			}
		}
		if st.Status == failover.StatusDone {
			fmt.Fprintf(a.stdout, "%s is fenced: its cells (%s) own nothing and accept nothing; %s serves their users\n", fromIDC, strings.Join(st.Plan.From, ", "), toIDC)
		}
		return nil
	}
	return a.launch(s, spec, rf)
}

// failoverRequest moves everything the lost IDC's cells own to the target
// IDC in one stage: its slots and the keys whitelisted to them (the
// completing stage of a plan takes those).
func failoverRequest(t *router.Table, fromIDC, toIDC string) (failover.Request, error) {
	if len(lostCells(t, fromIDC)) == 0 {
		return failover.Request{}, usagef("--from-idc %s: no cell of the map (epoch %d) is in that IDC; `cellctl cell list` shows the cells", fromIDC, t.Epoch())
	}
	return failover.Request{
		From:   failover.Endpoints{IDCs: []string{fromIDC}},
		To:     failover.Endpoints{IDCs: []string{toIDC}},
		Stages: []failover.StageSpec{{Fraction: failover.Fraction{Num: 1, Den: 1}}},
	}, nil
}

func lostCells(t *router.Table, idc string) map[string]bool {
	lost := map[string]bool{}
	for _, c := range t.Cells() {
		if c.IDC == idc {
			lost[c.ID] = true
		}
	}
	return lost
}
