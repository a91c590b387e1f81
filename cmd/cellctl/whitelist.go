package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/router"
)

func (a *app) newWhitelistCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "whitelist",
		Aliases: []string{"wl"},
		Short:   "Pin exact keys to a cell, ahead of their slot's owner (canary users go first)",
		Args:    noSubcommand,
		RunE:    showHelp,
	}
	cmd.AddCommand(a.newWhitelistAddCmd(), a.newWhitelistRmCmd(), a.newWhitelistListCmd())
	return cmd
}

func (a *app) newWhitelistAddCmd() *cobra.Command {
	var cell string
	cmd := &cobra.Command{
		Use:   "add KEY... --cell CELL --reason WHY",
		Short: "Pin keys to a cell (a key already pinned elsewhere is repinned)",
		Long: `Pin keys to a cell, ahead of their slot's owner. A key already pinned elsewhere
is repinned. IDs minted for a key follow it. All keys change in one epoch, or none.`,
		Example: `  cellctl whitelist add u42 u1001 --cell b1 --reason "canary users to IDC-B"`,
		Args:    minArgs(1, "at least one KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			if cell == "" {
				return usagef("--cell is required: the cell to pin the keys to")
			}
			if err := checkPinnable(args); err != nil {
				return err
			}
			return a.change(func(t *router.Table) error {
				for _, k := range args {
					if err := t.SetWhitelist(k, cell); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&cell, "cell", "", "the cell to pin the keys to (required)")
	return cmd
}

func (a *app) newWhitelistRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm KEY... --reason WHY",
		Aliases: []string{"remove"},
		Short:   "Unpin keys: they route by their slot again",
		Long: `Unpin keys: they route by their slot again. All keys change in one epoch, or
none: a key that is not whitelisted fails the whole command (exit 6).`,
		Example: `  cellctl whitelist rm u42 --reason "canary done"`,
		Args:    minArgs(1, "at least one KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			if err := checkKeys(args); err != nil {
				return err
			}
			return a.change(func(t *router.Table) error {
				for _, k := range args {
					if err := t.RemoveWhitelist(k); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

func (a *app) newWhitelistListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List whitelisted keys, their cell, and where their slot alone would send them",
		Example: `  cellctl whitelist list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.current()
			if err != nil {
				return err
			}
			out := whitelistList{}
			for _, e := range t.Whitelist() {
				c, _ := t.Cell(e.Cell)
				slot := t.Slot(e.Key)
				out = append(out, whitelistRow{Key: e.Key, Cell: e.Cell, IDC: c.IDC, Slot: slot, SlotOwner: t.SlotOwner(slot), Epoch: t.Epoch()})
			}
			return a.print(out)
		},
	}
}

type whitelistRow struct {
	Key       string `json:"key"`
	Cell      string `json:"cell"`
	IDC       string `json:"idc"`
	Slot      int    `json:"slot"`
	SlotOwner string `json:"slotOwner"` // where the key would go without the pin
	Epoch     uint64 `json:"epoch"`
}

type whitelistList []whitelistRow

func (l whitelistList) writeTable(w io.Writer) error {
	if len(l) == 0 {
		fmt.Fprintln(w, "no whitelisted keys")
		return nil
	}
	row(w, "KEY", "CELL", "IDC", "SLOT", "SLOT OWNER", "EPOCH")
	for _, e := range l {
		row(w, e.Key, e.Cell, e.IDC, e.Slot, orDash(e.SlotOwner), e.Epoch)
	}
	return nil
}
