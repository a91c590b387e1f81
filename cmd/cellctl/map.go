package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

func (a *app) newMapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "map",
		Short: "Create, show, validate, diff the shard map and read its history",
		Args:  noSubcommand,
		RunE:  showHelp,
	}
	cmd.AddCommand(a.newMapInitCmd(), a.newMapShowCmd(), a.newMapValidateCmd(), a.newMapDiffCmd(), a.newMapHistoryCmd())
	return cmd
}

// --- map init ---

func (a *app) newMapInitCmd() *cobra.Command {
	var (
		slots     int
		cells     []string
		endpoints []string
		fromFile  string
		force     bool
	)
	cmd := &cobra.Command{
		Use:   "init (--cell ID@IDC ... | --from-file FILE) --reason WHY",
		Short: "Create the cluster's map",
		Long: `Create the cluster's map.

With --cell, the slots are split evenly into contiguous blocks, one per cell, in
the order given: --slots 1024 --cell a1@IDC-A --cell b1@IDC-B gives a1 0-511 and
b1 512-1023. --cell takes a comma-separated list too. --endpoint CELL=ADDR (repeatable)
sets where a cell serves.

With --from-file, the map document in FILE ("-" for stdin; the JSON printed by
'cellctl map show -o json') is checked and stored; its epoch is replaced by the
next epoch of the cluster, so watchers never see the epoch go backwards.

An existing map (even a corrupt one) is only replaced with --force.`,
		Example: `  cellctl map init --cell a1@IDC-A,a2@IDC-A --cell b1@IDC-B,b2@IDC-B --reason "new cluster"
  cellctl map init --from-file good.json --force --reason "repair: restore epoch 41"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			var t *router.Table
			var err error
			if fromFile != "" {
				if cmd.Flags().Changed("slots") || len(cells) > 0 || len(endpoints) > 0 {
					return usagef("--from-file takes the whole map from the file; drop --slots, --cell and --endpoint")
				}
				if t, err = a.readMapFile(fromFile); err != nil {
					return err
				}
			} else if t, err = buildMap(slots, cells, endpoints); err != nil {
				return err
			}

			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			action := "created"
			if force {
				action = "replaced"
				t, err = s.store.Replace(s.ctx, a.reason, t)
			} else {
				t, err = s.store.Create(s.ctx, a.reason, t)
			}
			if err != nil {
				return a.etcdErr(err)
			}
			return a.print(mapView{Cluster: a.cluster, Action: action, t: t})
		},
	}
	f := cmd.Flags()
	f.IntVar(&slots, "slots", router.DefaultSlotCount, "number of slots: a power of two from 256 to 65536, fixed for the life of the map")
	f.StringSliceVar(&cells, "cell", nil, "a cell as ID@IDC; repeat or separate with commas; slots are split in this order")
	f.StringArrayVar(&endpoints, "endpoint", nil, "where a cell serves, as CELL=ADDR; repeatable")
	f.StringVar(&fromFile, "from-file", "", `take the whole map from a JSON map document ("-" for stdin)`)
	f.BoolVar(&force, "force", false, "replace an existing (or corrupt) map")
	return cmd
}

// buildMap makes a map of n slots split evenly between cells in order.
func buildMap(n int, specs, endpoints []string) (*router.Table, error) {
	if err := router.CheckSlotCount(n); err != nil {
		return nil, badSlots(n)
	}
	if len(specs) == 0 {
		return nil, usagef("give the cells with --cell ID@IDC (repeatable), or the whole map with --from-file")
	}
	if len(specs) > n {
		return nil, usagef("%d cells for %d slots: every cell needs at least one slot", len(specs), n)
	}
	var cells []router.Cell
	index := map[string]int{}
	for _, s := range specs {
		id, idc, ok := strings.Cut(strings.TrimSpace(s), "@")
		if !ok {
			return nil, usagef("--cell %q: want ID@IDC, e.g. a1@IDC-A", s)
		}
		c := router.Cell{ID: id, IDC: idc, State: router.StateActive}
		if err := c.Check(); err != nil {
			return nil, usagef("--cell %q: %s", s, message(err))
		}
		if _, dup := index[id]; dup {
			return nil, usagef("--cell %s given twice", id)
		}
		index[id] = len(cells)
		cells = append(cells, c)
	}
	for _, e := range endpoints {
		id, addr, ok := strings.Cut(e, "=")
		if !ok || addr == "" {
			return nil, usagef("--endpoint %q: want CELL=ADDR, e.g. a1=10.0.0.1:9000", e)
		}
		i, known := index[id]
		if !known {
			return nil, usagef("--endpoint %q: cell %q is not one of the --cell cells", e, id)
		}
		cells[i].Endpoints = append(cells[i].Endpoints, addr)
	}
	t, err := router.NewTable(n)
	if err != nil {
		return nil, asUsage(err)
	}
	for i, c := range cells {
		if err := t.AddCell(c); err != nil {
			return nil, asUsage(err)
		}
		r := router.SlotRange{First: i * n / len(cells), Last: (i+1)*n/len(cells) - 1}
		if err := t.Assign(r, c.ID); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func badSlots(n int) error {
	return usagef("--slots %d: want a power of two from %d to %d", n, router.MinSlotCount, router.MaxSlotCount)
}

// readFile reads a file argument; "-" is stdin.
func (a *app) readFile(path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(a.stdin, router.MaxDocumentSize+1))
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return b, nil
}

// readMapFile reads and decodes a map document from a file.
func (a *app) readMapFile(path string) (*router.Table, error) {
	b, err := a.readFile(path)
	if err != nil {
		return nil, err
	}
	t, err := router.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", displayPath(path), err)
	}
	return t, nil
}

func displayPath(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// --- map show ---

func (a *app) newMapShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the current map: cells, slot owners, frozen slots and keys, whitelist",
		Long: `Show the current map: cells, slot owners, frozen slots and keys, whitelist.

-o json prints the map document itself (what 'map init --from-file' and
'map diff' read); -o yaml the same as YAML.`,
		Example: `  cellctl map show
  cellctl map show -o json > epoch-41.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.current()
			if err != nil {
				return err
			}
			return a.print(mapView{Cluster: a.cluster, t: t})
		},
	}
}

// mapView is a whole map. As JSON it is exactly the map document.
type mapView struct {
	Cluster string
	Action  string // "created" or "replaced" after map init, else ""
	t       *router.Table
}

func (m mapView) MarshalJSON() ([]byte, error) { return router.Encode(m.t) }

func (m mapView) writeTable(w io.Writer) error {
	t := m.t
	cells := t.Cells()
	if m.Action != "" {
		fmt.Fprintf(w, "%s the map of cluster %s at epoch %d\n\n", m.Action, m.Cluster, t.Epoch())
	}
	row(w, "cluster", m.Cluster)
	row(w, "epoch", t.Epoch())
	row(w, "slots", t.SlotCount())
	row(w, "cells", fmt.Sprintf("%d in %s", len(cells), plural(countIDCs(cells), "IDC", "IDCs")))
	fmt.Fprintln(w)
	writeCellRows(w, cellRows(t))

	fmt.Fprintln(w)
	idc := map[string]string{}
	for _, c := range cells {
		idc[c.ID] = c.IDC
	}
	row(w, "SLOTS", "COUNT", "OWNER", "IDC")
	for _, r := range t.OwnerRanges() {
		row(w, r.SlotRange, r.Len(), orDash(r.Cell), orDash(idc[r.Cell]))
	}

	fmt.Fprintln(w)
	if fr := t.FrozenRanges(); len(fr) == 0 {
		fmt.Fprintln(w, "frozen slots: none")
	} else {
		row(w, "FROZEN SLOTS", "COUNT", "CUTOVER")
		for _, r := range fr {
			row(w, r.SlotRange, r.Len(), r.Cutover)
		}
	}
	if fk := t.FrozenKeys(); len(fk) == 0 {
		fmt.Fprintln(w, "frozen keys: none")
	} else {
		fmt.Fprintln(w)
		row(w, "FROZEN KEY", "CUTOVER")
		for _, k := range fk {
			row(w, k.Key, k.Cutover)
		}
	}
	if wl := t.Whitelist(); len(wl) == 0 {
		fmt.Fprintln(w, "whitelist: none")
	} else {
		fmt.Fprintln(w)
		row(w, "WHITELISTED KEY", "CELL", "IDC")
		for _, e := range wl {
			row(w, e.Key, e.Cell, idc[e.Cell])
		}
	}
	return nil
}

func countIDCs(cells []router.Cell) int {
	seen := map[string]bool{}
	for _, c := range cells {
		seen[c.IDC] = true
	}
	return len(seen)
}

// --- map validate ---

func (a *app) newMapValidateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate [--file FILE]",
		Short: "Check the stored map (or a file) and name every problem",
		Long: `Check the stored map document exactly as stored (or the document in FILE, "-"
for stdin) and name every problem: malformed JSON, unknown fields or schema,
unowned slots, owners that are offline or unknown, duplicate cells. Exits 5 when
the map is not usable.`,
		Example: `  cellctl map validate
  cellctl map validate --file new-map.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res validateResult
			if file != "" {
				b, err := a.readFile(file)
				if err != nil {
					return err
				}
				res = validateDoc(b)
				res.Source = displayPath(file)
			} else {
				s, err := a.connect()
				if err != nil {
					return err
				}
				defer s.Close()
				b, rev, err := s.store.LoadRaw(s.ctx)
				if err != nil {
					return a.etcdErr(err)
				}
				res = validateDoc(b)
				res.Source = fmt.Sprintf("etcd %s", s.store.Keys().Map())
				res.Revision = rev
			}
			if err := a.print(res); err != nil {
				return err
			}
			if !res.Valid {
				return fmt.Errorf("%w: %s has %s (listed above)", errMapInvalid, res.Source, plural(len(res.Problems), "problem", "problems"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", `validate this map document instead of the stored map ("-" for stdin)`)
	return cmd
}

// validateResult is the verdict on one map document.
type validateResult struct {
	Source      string   `json:"source"`
	Revision    int64    `json:"revision,omitempty"` // etcd mod revision of the stored map
	Valid       bool     `json:"valid"`
	Epoch       uint64   `json:"epoch"`
	SlotCount   int      `json:"slotCount,omitempty"`
	Cells       int      `json:"cells,omitempty"`
	IDCs        int      `json:"idcs,omitempty"`
	Whitelisted int      `json:"whitelisted,omitempty"`
	FrozenSlots int      `json:"frozenSlots,omitempty"`
	FrozenKeys  int      `json:"frozenKeys,omitempty"`
	Problems    []string `json:"problems,omitempty"`
}

func validateDoc(b []byte) validateResult {
	t, err := router.Decode(b)
	if err == nil {
		frozen := 0
		for _, r := range t.FrozenRanges() {
			frozen += r.Len()
		}
		cells := t.Cells()
		return validateResult{
			Valid: true, Epoch: t.Epoch(), SlotCount: t.SlotCount(), Cells: len(cells), IDCs: countIDCs(cells),
			Whitelisted: len(t.Whitelist()), FrozenSlots: frozen, FrozenKeys: len(t.FrozenKeys()),
		}
	}
	// The epoch of a broken document, if it still has one, helps to say
	// which map this was.
	var probe struct {
		Epoch uint64 `json:"epoch"`
	}
	_ = json.Unmarshal(b, &probe)
	return validateResult{Epoch: probe.Epoch, Problems: problems(err)}
}

// problems lists what is wrong with a map document, one item per problem.
func problems(err error) []string {
	var ve *router.ValidationError
	if errors.As(err, &ve) {
		return ve.Problems
	}
	msg := message(err)
	msg = strings.TrimPrefix(msg, "map document: ")
	for _, sentinel := range []error{router.ErrMalformedMap, router.ErrUnsupportedSchema} {
		msg = strings.TrimSuffix(msg, ": "+sentinel.Error())
	}
	return []string{msg}
}

func (r validateResult) writeTable(w io.Writer) error {
	where := r.Source
	if r.Revision != 0 {
		where += fmt.Sprintf(" (revision %d)", r.Revision)
	}
	if r.Valid {
		frozen := "no frozen slots or keys"
		if r.FrozenSlots+r.FrozenKeys > 0 {
			frozen = fmt.Sprintf("%s and %s frozen", plural(r.FrozenSlots, "slot", "slots"), plural(r.FrozenKeys, "key", "keys"))
		}
		fmt.Fprintf(w, "map epoch %d is valid: %d slots, %s in %s, %s, %s\n  source: %s\n",
			r.Epoch, r.SlotCount, plural(r.Cells, "cell", "cells"), plural(r.IDCs, "IDC", "IDCs"),
			plural(r.Whitelisted, "whitelisted key", "whitelisted keys"), frozen, where)
		return nil
	}
	epoch := "map"
	if r.Epoch != 0 {
		epoch = fmt.Sprintf("map epoch %d", r.Epoch)
	}
	fmt.Fprintf(w, "%s is NOT valid: %s\n  source: %s\n", epoch, plural(len(r.Problems), "problem", "problems"), where)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
	return nil
}

// --- map diff ---

func (a *app) newMapDiffCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "diff FILE | diff OLD NEW",
		Short: "Show what would change from the stored map to FILE, or between two files",
		Example: `  cellctl map show -o json > before.json
  cellctl map diff before.json            # stored map vs. before.json
  cellctl map diff before.json after.json`,
		Args: rangeArgs(1, 2, "FILE (stored map vs. FILE) or OLD NEW (two files)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res diffResult
			var from, to *router.Table
			if len(args) == 1 {
				var err error
				if to, err = a.readMapFile(args[0]); err != nil {
					return err
				}
				s, err := a.connect()
				if err != nil {
					return err
				}
				defer s.Close()
				if from, err = s.load(); err != nil {
					return err
				}
				res.From = fmt.Sprintf("cluster %s", a.cluster)
				res.To = displayPath(args[0])
			} else {
				if args[0] == "-" && args[1] == "-" {
					return usagef("only one of the files can be stdin")
				}
				var err error
				if from, err = a.readMapFile(args[0]); err != nil {
					return err
				}
				if to, err = a.readMapFile(args[1]); err != nil {
					return err
				}
				res.From, res.To = displayPath(args[0]), displayPath(args[1])
			}
			res.Diff = router.Compare(from, to)
			res.Changes = nonNil(res.Diff.Lines())
			return a.print(res)
		},
	}
}

type diffResult struct {
	From    string      `json:"from"`
	To      string      `json:"to"`
	Changes []string    `json:"changes"`
	Diff    router.Diff `json:"diff"`
}

func (r diffResult) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "%s (epoch %d) -> %s (epoch %d)\n", r.From, r.Diff.FromEpoch, r.To, r.Diff.ToEpoch)
	if len(r.Changes) == 0 {
		fmt.Fprintln(w, "  no differences")
	}
	for _, l := range r.Changes {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// --- map history ---

func (a *app) newMapHistoryCmd() *cobra.Command {
	var (
		limit int
		full  bool
	)
	cmd := &cobra.Command{
		Use:   "history [--limit N] [--full]",
		Short: "Show the audit log: every change to the map, newest first",
		Example: `  cellctl map history --limit 5
  cellctl map history --full -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit %d: want 0 (everything) or more", limit)
			}
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			recs, err := s.store.History(s.ctx, limit)
			if err != nil {
				return a.etcdErr(err)
			}
			return a.print(historyResult{Records: recs, full: full})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most N records (0: all)")
	cmd.Flags().BoolVar(&full, "full", false, "list every change of each record, not a summary")
	return cmd
}

type historyResult struct {
	Records []etcdstore.AuditRecord
	full    bool
}

func (h historyResult) MarshalJSON() ([]byte, error) {
	if h.Records == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(h.Records)
}

func (h historyResult) writeTable(w io.Writer) error {
	if len(h.Records) == 0 {
		fmt.Fprintln(w, "no changes recorded")
		return nil
	}
	row(w, "EPOCH", "WHEN (UTC)", "WHO", "OP", "WHY", "CHANGES")
	for _, r := range h.Records {
		lines := r.Diff.Lines()
		changes := summarize(r.Diff)
		if h.full {
			changes = joinOrDash(lines, "; ")
		}
		row(w, r.Epoch, r.When.UTC().Format(time.DateTime), r.Who, r.Op, oneLine(r.Why), changes)
	}
	return nil
}

// summarize describes a diff in one short line: the change itself when
// there are one or two, counts otherwise.
func summarize(d router.Diff) string {
	lines := d.Lines()
	if len(lines) <= 2 {
		return joinOrDash(lines, "; ")
	}
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(len(d.CellsAdded), "cell(s) added")
	add(len(d.CellsRemoved), "cell(s) removed")
	add(len(d.CellsChanged), "cell(s) changed")
	add(d.MovedSlots(), "slot(s) assigned")
	frozen, unfrozen := 0, 0
	for _, r := range d.Frozen {
		frozen += r.Len()
	}
	for _, r := range d.Unfrozen {
		unfrozen += r.Len()
	}
	add(frozen, "slot(s) frozen")
	add(unfrozen, "slot(s) unfrozen")
	add(len(d.KeysFrozen), "key(s) frozen")
	add(len(d.KeysUnfrozen), "key(s) unfrozen")
	add(len(d.WhitelistAdded), "key(s) whitelisted")
	add(len(d.WhitelistChanged), "whitelisted key(s) repinned")
	add(len(d.WhitelistRemoved), "key(s) unwhitelisted")
	if d.SlotCount != [2]int{} {
		parts = append(parts, fmt.Sprintf("slot count %d -> %d", d.SlotCount[0], d.SlotCount[1]))
	}
	return strings.Join(parts, ", ")
}

// oneLine keeps a free-text reason on one table row.
func oneLine(s string) string {
	return orDash(strings.Join(strings.Fields(s), " "))
}

// --- changes ---

// change applies fn to the map with Store.Update and prints what changed.
func (a *app) change(fn func(*router.Table) error) error {
	if err := a.requireReason(); err != nil {
		return err
	}
	s, err := a.connect()
	if err != nil {
		return err
	}
	defer s.Close()
	var before *router.Table
	t, err := s.store.Update(s.ctx, a.reason, func(t *router.Table) error {
		before = t.Clone() // Update may call fn again after a lost race; the last call counts
		return fn(t)
	})
	if errors.Is(err, etcdstore.ErrNoChange) {
		return a.print(changeResult{Cluster: a.cluster, Epoch: t.Epoch()})
	}
	if err != nil {
		return a.etcdErr(err)
	}
	d := router.Compare(before, t)
	return a.print(changeResult{
		Cluster: a.cluster, Changed: true, PrevEpoch: before.Epoch(), Epoch: t.Epoch(),
		Who: a.actor, Why: a.reason, Changes: d.Lines(), Diff: &d,
	})
}

// changeResult is what one change to the map did.
type changeResult struct {
	Cluster   string       `json:"cluster"`
	Changed   bool         `json:"changed"`
	PrevEpoch uint64       `json:"prevEpoch,omitempty"`
	Epoch     uint64       `json:"epoch"`
	Who       string       `json:"who,omitempty"`
	Why       string       `json:"why,omitempty"`
	Changes   []string     `json:"changes,omitempty"`
	Diff      *router.Diff `json:"diff,omitempty"`
}

func (r changeResult) writeTable(w io.Writer) error {
	if !r.Changed {
		fmt.Fprintf(w, "nothing changed (epoch %d)\n", r.Epoch)
		return nil
	}
	fmt.Fprintf(w, "map epoch %d -> %d (cluster %s, by %s)\n", r.PrevEpoch, r.Epoch, r.Cluster, r.Who)
	for _, l := range r.Changes {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return nil
}
