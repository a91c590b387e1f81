package main

import (
	"bytes"
	"context"
	"fmt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

func (a *app) newTourCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tour",
		Short: "A guided tour of the map and the data plane: etcd, a two-IDC map, IDs, a canary, guarded cells, cellrouter, a refused request",
		Long: `A one-command tour of cellkit, with nothing installed or running: it starts an
embedded etcd in a temporary directory on free ports, creates a two-IDC map,
routes sample users, mints an order ID, whitelists a canary user to the other
IDC and shows what changed and the audit record; then it starts a guarded
ledger instance for every cell (each registered in etcd with a lease and an
ack), puts cellrouter in front of them, pays every user through the router,
and shows a cell's guard refusing a request sent to it for a user it does not
own. Then it stops everything and removes the directory. -o json or -o yaml
prints what it did instead of the narration.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runTour() },
	}
}

// The demo's fixed cast.
const (
	demoCluster = "demo"
	demoSlots   = router.DefaultSlotCount
	demoFrom    = "IDC-A"
	demoTo      = "IDC-B"
)

var (
	demoCells = []router.Cell{
		{ID: "a1", IDC: demoFrom, State: router.StateActive},
		{ID: "a2", IDC: demoFrom, State: router.StateActive},
		{ID: "b1", IDC: demoTo, State: router.StateActive},
		{ID: "b2", IDC: demoTo, State: router.StateActive},
	}
	demoUsers = []string{"u42", "alice", "u1", "u8", "erin", "dave"} // spread over both IDCs; u42 is the canary
)

// demo is the state a tour carries from step to step.
type demo struct {
	a     *app
	w     io.Writer // narration: stdout with -o table, else discarded
	dir   string
	srv   *etcdembed.Server
	store *etcdstore.Store
	table *router.Table // the map as of the last step
	res   demoResult
	cli   *clientv3.Client
	cells *demoPlane

	closeClient func() error
	closers     []func() // the data plane, closed in reverse before etcd
}

// demoStep is one numbered part of the tour. Later tours (cutover, failover)
// add steps here.
type demoStep struct {
	title string
	run   func(*demo) error
}

func demoSteps() []demoStep {
	return []demoStep{
		{"Start a throwaway etcd", (*demo).startEtcd},
		{"Create a map with two IDCs", (*demo).createMap},
		{"Route some users", (*demo).routeUsers},
		{"Mint an order ID for a user", (*demo).mintOrder},
		{"Whitelist a canary user to the other IDC", (*demo).whitelistCanary},
		{"Start a guarded cell instance for every cell", (*demo).startCells},
		{"Start cellrouter in front of them", (*demo).startRouter},
		{"Pay every user through the router", (*demo).payThroughRouter},
		{"Send a request to the wrong cell", (*demo).refuseWrongCell},
	}
}

// demoResult is what the tour did, for -o json and -o yaml.
type demoResult struct {
	Etcd      string                  `json:"etcd"`
	Cluster   string                  `json:"cluster"`
	Epoch     uint64                  `json:"epoch"`
	Cells     cellList                `json:"cells"`
	Routes    routeList               `json:"routes"`
	Order     *demoOrder              `json:"order,omitempty"`
	Canary    *demoCanary             `json:"canary,omitempty"`
	Audit     []etcdstore.AuditRecord `json:"audit"`
	Instances []demoCellRun           `json:"instances,omitempty"`
	Router    string                  `json:"router,omitempty"`
	Payments  []demoPayment           `json:"payments,omitempty"`
	Refusal   *demoRefusal            `json:"refusal,omitempty"`
	Steps     []string                `json:"steps"`
}

type demoOrder struct {
	ID        string   `json:"id"`
	Key       string   `json:"key"`
	Route     routeRow `json:"route"`
	SameAsKey bool     `json:"sameCellAsKey"`
}

type demoCanary struct {
	Key        string   `json:"key"`
	FromCell   string   `json:"fromCell"`
	FromIDC    string   `json:"fromIdc"`
	ToCell     string   `json:"toCell"`
	ToIDC      string   `json:"toIdc"`
	EpochFrom  uint64   `json:"epochFrom"`
	EpochTo    uint64   `json:"epochTo"`
	Changes    []string `json:"changes"`
	OrderRoute routeRow `json:"orderRoute"`
}

func (r demoResult) writeTable(io.Writer) error { return nil } // the narration was the table

func (a *app) runTour() (err error) {
	d := &demo{a: a, w: io.Discard, res: demoResult{Cluster: demoCluster}}
	if a.output == "table" {
		d.w = a.stdout
	}
	fmt.Fprintln(d.w, "cellkit tour: a shard map in etcd, routing, IDs, a canary move, guarded cells and cellrouter.")
	fmt.Fprintln(d.w, "Nothing is installed and nothing is left behind.")
	steps := demoSteps()
	defer func() {
		// Always clean up, and say so, even after a failed step.
		fmt.Fprintf(d.w, "\n%d. Stop everything and clean up\n", len(steps)+1)
		d.cleanup()
		if err == nil {
			d.outro()
			err = a.print(d.res)
		}
	}()
	for i, s := range steps {
		fmt.Fprintf(d.w, "\n%d. %s\n", i+1, s.title)
		if err := s.run(d); err != nil {
			return fmt.Errorf("demo step %d (%s): %w", i+1, strings.ToLower(s.title[:1])+s.title[1:], err)
		}
		d.res.Steps = append(d.res.Steps, s.title)
	}
	return nil
}

// say narrates one indented line.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.w, "   "+format+"\n", args...)
}

// show prints a result as an indented table.
func (d *demo) show(r result) {
	var b bytes.Buffer
	printResult(&b, "table", r)
	for _, l := range strings.SplitAfter(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintf(d.w, "     %s", strings.TrimRight(l, "\n")+"\n")
	}
}

// op bounds one etcd operation by --timeout.
func (d *demo) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.a.ctx, d.a.timeout)
}

func (d *demo) startEtcd() error {
	dir, err := os.MkdirTemp("", "cellkit-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	srv, err := etcdembed.Start(d.a.ctx, etcdembed.DefaultConfig(dir))
	if err != nil {
		return err
	}
	d.srv = srv
	cli, err := etcdstore.Dial(d.a.ctx, etcdstore.DialConfig{Endpoints: srv.Endpoints(), DialTimeout: d.a.timeout})
	if err != nil {
		return err
	}
	d.store, err = etcdstore.New(cli, etcdstore.Config{Cluster: demoCluster, Actor: d.a.actor})
	if err != nil {
		cli.Close()
		return err
	}
	d.closeClient, d.cli = cli.Close, cli
	d.res.Etcd = srv.ClientURL()
	d.say("etcd is serving at %s (data in %s)", srv.ClientURL(), dir)
	return nil
}

func (d *demo) createMap() error {
	t, err := router.NewTable(demoSlots)
	if err != nil {
		return err
	}
	for i, c := range demoCells {
		if err := t.AddCell(c); err != nil {
			return err
		}
		r := router.SlotRange{First: i * demoSlots / len(demoCells), Last: (i+1)*demoSlots/len(demoCells) - 1}
		if err := t.Assign(r, c.ID); err != nil {
			return err
		}
	}
	ctx, cancel := d.op()
	defer cancel()
	if d.table, err = d.store.Create(ctx, "demo: a map with two IDCs", t); err != nil {
		return err
	}
	d.res.Epoch = d.table.Epoch()
	d.res.Cells = cellRows(d.table)
	d.say("%d slots, split evenly in contiguous blocks: a1 and a2 in %s, b1 and b2 in %s.", demoSlots, demoFrom, demoTo)
	d.say("Written to etcd with compare-and-swap, with an audit record, as map epoch %d:", d.table.Epoch())
	d.show(d.res.Cells)
	return nil
}

func (d *demo) routeUsers() error {
	d.res.Routes = routeKeys(d.table, demoUsers)
	d.say("A key's slot is xxh64(key) mod %d; the slot's owner serves the user.", demoSlots)
	d.show(d.res.Routes)
	return nil
}

// canary is the first sample user served in demoFrom: the one the tour moves.
func (d *demo) canary() routeRow {
	for _, r := range d.res.Routes {
		if r.IDC == demoFrom {
			return r
		}
	}
	return d.res.Routes[0]
}

func (d *demo) mintOrder() error {
	user := d.canary()
	id, err := router.NewID("ord", user.Key)
	if err != nil {
		return err
	}
	rt := routeKeys(d.table, []string{id})[0]
	d.res.Order = &demoOrder{ID: id, Key: user.Key, Route: rt, SameAsKey: rt.Cell == user.Cell}
	d.say("An order ID minted for %s carries %s's routing hash, so it routes with no lookup:", user.Key, user.Key)
	d.show(routeKeys(d.table, []string{user.Key, id}))
	if rt.Cell == user.Cell {
		d.say("Same slot, same cell: %s and its order are both served by %s in %s.", user.Key, rt.Cell, rt.IDC)
	} else {
		return fmt.Errorf("order %s routes to %s, its user %s to %s", id, rt.Cell, user.Key, user.Cell)
	}
	return nil
}

func (d *demo) whitelistCanary() error {
	user := d.canary()
	var to router.Cell
	for _, c := range d.table.Cells() {
		if c.IDC != user.IDC {
			to = c
			break
		}
	}
	before := d.table
	ctx, cancel := d.op()
	defer cancel()
	reason := fmt.Sprintf("demo: canary user %s goes to %s first", user.Key, to.IDC)
	after, err := d.store.Update(ctx, reason, func(t *router.Table) error { return t.SetWhitelist(user.Key, to.ID) })
	if err != nil {
		return err
	}
	d.table = after
	diff := router.Compare(before, after)
	audit, err := d.store.History(ctx, 0)
	if err != nil {
		return err
	}
	d.res.Epoch = after.Epoch()
	d.res.Audit = audit

	moved := routeKeys(after, []string{user.Key, d.res.Order.ID})
	d.res.Canary = &demoCanary{
		Key: user.Key, FromCell: user.Cell, FromIDC: user.IDC, ToCell: moved[0].Cell, ToIDC: moved[0].IDC,
		EpochFrom: before.Epoch(), EpochTo: after.Epoch(), Changes: diff.Lines(), OrderRoute: moved[1],
	}
	d.say("Canary users move before their slots do: %s is pinned to %s in %s.", user.Key, to.ID, to.IDC)
	d.say("What changed, epoch %d -> %d:", before.Epoch(), after.Epoch())
	for _, l := range diff.Lines() {
		d.say("  %s", l)
	}
	if len(audit) > 0 {
		r := audit[0]
		d.say("The audit record, written in the same transaction:")
		d.say("  epoch %d (was %d), %s by %s at %s", r.Epoch, r.PrevEpoch, r.Op, r.Who, r.When.UTC().Format(time.DateTime+" UTC"))
		d.say("  why: %s", r.Why)
	}
	d.say("%s moved from %s (%s) to %s (%s), and its order follows it:", user.Key, user.Cell, user.IDC, moved[0].Cell, moved[0].IDC)
	d.show(moved)
	d.say("Everyone else in slot %d stays on %s.", user.Slot, after.SlotOwner(user.Slot))
	return nil
}

func (d *demo) cleanup() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	if len(d.closers) > 0 {
		d.say("router and cell instances stopped (leases revoked)")
	}
	if d.closeClient != nil {
		d.closeClient()
	}
	if d.srv != nil {
		d.srv.Close()
		d.say("etcd stopped")
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			d.say("could not remove %s: %v", d.dir, err)
		} else {
			d.say("removed %s", d.dir)
		}
	}
}

func (d *demo) outro() {
	fmt.Fprintln(d.w, "\nThat is the map and the data plane at work. To keep going on your machine:")
	fmt.Fprintln(d.w, "  cellctl dev                     # a local etcd that keeps its data; then, in another shell:")
	fmt.Fprintln(d.w, "  export CELLKIT_ETCD=http://127.0.0.1:2379")
	fmt.Fprintln(d.w, `  cellctl map init --cell a1@IDC-A,a2@IDC-A --cell b1@IDC-B,b2@IDC-B --reason "first map"`)
	fmt.Fprintln(d.w, "  cellctl route u42")
	fmt.Fprintln(d.w, "docs/cli.md has every command.")
}
