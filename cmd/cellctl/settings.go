package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/etcdcutover"
)

func (a *app) newSettingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "settings",
		Short: "Show or change the cluster's settings (self-fencing)",
		Long: `Show or change the cluster's settings, stored at /cellkit/<cluster>/settings.

selfFencing (default true) says every guard of the cluster fences itself when
it cannot renew its etcd lease (etcd must then span three sites). An emergency
failover relies on it: expired leases prove a lost IDC stopped writing. A
cluster that turns it off must confirm by hand that an IDC is down
(cellctl failover --confirm-idc-down).`,
		Args: noArgs,
		RunE: noSubcommand,
	}
	cmd.AddCommand(a.newSettingsShowCmd(), a.newSettingsSetCmd())
	return cmd
}

type settingsResult struct {
	Cluster  string               `json:"cluster"`
	Settings etcdcutover.Settings `json:"settings"`
}

func (r settingsResult) writeTable(w io.Writer) error {
	tw := newTabWriter(w)
	row(tw, "cluster", r.Cluster)
	row(tw, "self-fencing", yesNo(r.Settings.SelfFencing))
	if r.Settings.Who != "" {
		row(tw, "changed", fmt.Sprintf("by %s at %s: %s", r.Settings.Who, r.Settings.When.UTC().Format(time.RFC3339), r.Settings.Why))
	} else {
		row(tw, "changed", "never (defaults)")
	}
	return tw.Flush()
}

func (a *app) newSettingsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the cluster's settings",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := a.short()
			defer cancel()
			st, err := etcdcutover.LoadSettings(ctx, s.cli, a.cluster)
			if err != nil {
				if errors.Is(err, etcdcutover.ErrCorruptSettings) {
					return fmt.Errorf("cluster %s: %s: %w", a.cluster, message(err), errCorruptSettings)
				}
				return a.etcdErr(err)
			}
			return a.print(settingsResult{Cluster: a.cluster, Settings: st})
		},
	}
}

func (a *app) newSettingsSetCmd() *cobra.Command {
	var selfFencing string
	cmd := &cobra.Command{
		Use:     "set --self-fencing=true|false --reason WHY",
		Short:   "Change the cluster's settings",
		Example: `  cellctl settings set --self-fencing=false --reason "etcd in two sites only until DC3 is live (OPS-77)"`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			var on bool
			switch strings.ToLower(selfFencing) {
			case "true", "on", "yes":
				on = true
			case "false", "off", "no":
			case "":
				return usagef("--self-fencing is required: true or false")
			default:
				return usagef("--self-fencing %q: want true or false", selfFencing)
			}
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := a.short()
			defer cancel()
			st, err := etcdcutover.LoadSettings(ctx, s.cli, a.cluster)
			if err != nil && !errors.Is(err, etcdcutover.ErrCorruptSettings) {
				return a.etcdErr(err)
			}
			// A corrupt document is replaced: that is how it is repaired.
			st.SelfFencing, st.Who, st.When, st.Why = on, a.actor, time.Now().UTC(), a.reason
			if err := etcdcutover.SaveSettings(ctx, s.cli, a.cluster, st); err != nil {
				return a.etcdErr(err)
			}
			return a.print(settingsResult{Cluster: a.cluster, Settings: st})
		},
	}
	cmd.Flags().StringVar(&selfFencing, "self-fencing", "", "true: guards fence themselves when their etcd lease lapses (default); false: they do not, and failovers need --confirm-idc-down")
	return cmd
}
