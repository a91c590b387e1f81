package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/router"
)

func (a *app) newRouteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "route KEY...",
		Short: "Show where keys route: slot, owner cell, IDC, epoch, frozen?, whitelisted?",
		Long: `Show where keys route in the current map: the slot, the owner cell and its IDC,
the epoch, whether the key is frozen (and by which cutover) and whether the owner
comes from the whitelist. A slot-bearing ID (from 'cellctl id new') routes with
the key it was minted for.`,
		Example: `  cellctl route u42 u1001
  cellctl route ord_06GZS8NRF4QS79HB3WYRRTBSYJ0DKGD6 -o json`,
		Args: minArgs(1, "at least one KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKeys(args); err != nil {
				return err
			}
			t, err := a.current()
			if err != nil {
				return err
			}
			return a.print(routeKeys(t, args))
		},
	}
}

// routeRow is where one key goes. The JSON field names are stable.
type routeRow struct {
	Key         string `json:"key"`
	Slot        int    `json:"slot"`
	Cell        string `json:"cell"`
	IDC         string `json:"idc"`
	State       string `json:"state"`
	Epoch       uint64 `json:"epoch"`
	Frozen      bool   `json:"frozen"`
	Cutover     string `json:"cutover"`
	Whitelisted bool   `json:"whitelisted"`
	ID          bool   `json:"id"` // the key is a slot-bearing ID
}

type routeList []routeRow

func routeKeys(t *router.Table, keys []string) routeList {
	out := make(routeList, 0, len(keys))
	for _, k := range keys {
		r := t.Lookup(k)
		_, idErr := router.ParseID(k)
		row := routeRow{Key: k, Slot: r.Slot, Epoch: r.Epoch, Frozen: r.Frozen, Cutover: r.Cutover, Whitelisted: r.Whitelisted, ID: idErr == nil}
		if r.Cell != nil {
			row.Cell, row.IDC, row.State = r.Cell.ID, r.Cell.IDC, string(r.Cell.State)
		}
		out = append(out, row)
	}
	return out
}

func (l routeList) writeTable(w io.Writer) error {
	row(w, "KEY", "SLOT", "CELL", "IDC", "STATE", "EPOCH", "FROZEN", "WHITELISTED")
	for _, r := range l {
		frozen := yesNo(r.Frozen)
		if r.Frozen {
			frozen += " (cutover " + r.Cutover + ")"
		}
		row(w, r.Key, r.Slot, orDash(r.Cell), orDash(r.IDC), orDash(r.State), r.Epoch, frozen, yesNo(r.Whitelisted))
	}
	return nil
}
