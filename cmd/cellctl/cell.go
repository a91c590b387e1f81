package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/router"
)

func (a *app) newCellCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cell",
		Short: "Add, list, change the state of and remove cells",
		Args:  noSubcommand,
		RunE:  showHelp,
	}
	cmd.AddCommand(a.newCellAddCmd(), a.newCellListCmd(), a.newCellSetStateCmd(), a.newCellRmCmd())
	return cmd
}

func (a *app) newCellAddCmd() *cobra.Command {
	var (
		idc       string
		state     string
		endpoints []string
	)
	cmd := &cobra.Command{
		Use:   "add ID --idc IDC [--state STATE] [--endpoint ADDR ...] --reason WHY",
		Short: "Add a cell (it owns no slots until a cutover moves some to it)",
		Example: `  cellctl cell add b3 --idc IDC-B --endpoint 10.2.0.3:9000 --reason "capacity for the sale"
  cellctl cell add c1 --idc IDC-C --state draining --reason "build out IDC-C"`,
		Args: exactArgs(1, "the cell ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			if idc == "" {
				return usagef("--idc is required: the IDC (data center) the cell runs in")
			}
			st, err := router.ParseCellState(state)
			if err != nil {
				return asUsage(err)
			}
			c := router.Cell{ID: args[0], IDC: idc, State: st, Endpoints: endpoints}
			if err := c.Check(); err != nil {
				return asUsage(err)
			}
			return a.change(func(t *router.Table) error { return t.AddCell(c) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&idc, "idc", "", "the IDC (data center) the cell runs in (required)")
	f.StringVar(&state, "state", string(router.StateActive), "initial state: active, draining, fenced or offline")
	f.StringArrayVar(&endpoints, "endpoint", nil, "an address the cell serves at; repeatable")
	return cmd
}

func (a *app) newCellListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the cells with their IDC, state, slots, whitelisted keys and endpoints",
		Example: `  cellctl cell list
  cellctl cell list -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.current()
			if err != nil {
				return err
			}
			return a.print(cellRows(t))
		},
	}
}

func (a *app) newCellSetStateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-state ID STATE --reason WHY",
		Short: "Change a cell's state: active, draining, fenced or offline",
		Long: `Change a cell's state: active, draining, fenced or offline.

A cell that owns slots or whitelisted keys cannot be offline; move them first.`,
		Example: `  cellctl cell set-state a2 draining --reason "maintenance window OPS-1234"`,
		Args:    exactArgs(2, "ID STATE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			id := args[0]
			st, err := router.ParseCellState(args[1])
			if err != nil {
				return asUsage(err)
			}
			return a.change(func(t *router.Table) error { return t.SetCellState(id, st) })
		},
	}
}

func (a *app) newCellRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID --reason WHY",
		Aliases: []string{"remove"},
		Short:   "Remove a cell that owns no slots and no whitelisted keys",
		Example: `  cellctl cell rm c1 --reason "IDC-C build-out cancelled"`,
		Args:    exactArgs(1, "the cell ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			id := args[0]
			return a.change(func(t *router.Table) error { return t.RemoveCell(id) })
		},
	}
}

// cellRow is one cell with what it owns.
type cellRow struct {
	ID          string   `json:"id"`
	IDC         string   `json:"idc"`
	State       string   `json:"state"`
	Slots       int      `json:"slots"`
	SlotRanges  string   `json:"slotRanges"`
	Whitelisted int      `json:"whitelisted"`
	Endpoints   []string `json:"endpoints"`
}

type cellList []cellRow

func cellRows(t *router.Table) cellList {
	pinned := map[string]int{}
	for _, e := range t.Whitelist() {
		pinned[e.Cell]++
	}
	ranges := map[string][]router.SlotRange{}
	for _, r := range t.OwnerRanges() {
		ranges[r.Cell] = append(ranges[r.Cell], r.SlotRange)
	}
	out := cellList{}
	for _, c := range t.Cells() {
		n := 0
		for _, r := range ranges[c.ID] {
			n += r.Len()
		}
		eps := c.Endpoints
		if eps == nil {
			eps = []string{}
		}
		out = append(out, cellRow{
			ID: c.ID, IDC: c.IDC, State: string(c.State), Slots: n,
			SlotRanges: router.FormatSlotRanges(ranges[c.ID]), Whitelisted: pinned[c.ID], Endpoints: eps,
		})
	}
	return out
}

func (l cellList) writeTable(w io.Writer) error {
	writeCellRows(w, l)
	return nil
}

func writeCellRows(w io.Writer, l cellList) {
	if len(l) == 0 {
		fmt.Fprintln(w, "no cells")
		return
	}
	row(w, "CELL", "IDC", "STATE", "SLOTS", "RANGES", "WHITELISTED", "ENDPOINTS")
	for _, c := range l {
		row(w, c.ID, c.IDC, c.State, c.Slots, orDash(shorten(c.SlotRanges, 40)), c.Whitelisted, joinOrDash(c.Endpoints, ","))
	}
}

// shorten keeps a long range list from wrapping a table row.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := strings.LastIndex(s[:n], ",")
	if cut < 0 {
		cut = n
	}
	return s[:cut] + ",..."
}
