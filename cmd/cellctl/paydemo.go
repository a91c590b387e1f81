package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/lab"
	"github.com/cellkit/cellkit/lab/books"
	"github.com/cellkit/cellkit/lab/load"
	"github.com/cellkit/cellkit/router"
)

// payDemoFlags are the flags of cellctl demo.
type payDemoFlags struct {
	quick   bool
	users   int
	workers int
	stages  string
	bake    time.Duration
	keep    bool
	slots   int
	rate    float64
}

func (a *app) newDemoCmd() *cobra.Command {
	f := &payDemoFlags{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The whole story in one command: four payment cells in two IDCs, a staged move of IDC-A's users to IDC-B and back under load, and the books checked",
		Long: `The main job of cellkit, on this machine, with nothing installed or running:
an embedded etcd, two IDCs with two paycell cells each (SQLite books), the
virtual bank, cellrouter in front of the cells, and a load generator paying
merchants through the router. While the payments run it moves every user of
IDC-A to IDC-B in stages (1/256, 1/8, 1/4, 1/2, all), copying each stage's
rows while its slots are frozen, then moves them back; then it checks the
books: every acknowledged payment exists exactly once, at the cell that owns
it; money is conserved; no slot was written by two cells at once. It prints
a report and exits 1 if any invariant failed or any payment failed.

About two minutes; --quick takes about twenty seconds. -o json prints the
report as JSON instead of the narration.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.quick {
				if !cmd.Flags().Changed("users") {
					f.users = 100
				}
				if !cmd.Flags().Changed("stages") {
					f.stages = "1/8,1"
				}
				if !cmd.Flags().Changed("bake") {
					f.bake = time.Second
				}
			}
			if f.users < 1 || f.users > 100000 {
				return usagef("--users %d: want 1 to 100000", f.users)
			}
			if f.workers < 1 || f.workers > 256 {
				return usagef("--workers %d: want 1 to 256", f.workers)
			}
			if f.rate < 0 {
				return usagef("--rate %v: want 0 (as fast as the workers go) or more", f.rate)
			}
			if f.bake < 0 || f.bake > 10*time.Minute {
				return usagef("--bake %v: want 0 to 10m", f.bake)
			}
			if err := router.CheckSlotCount(f.slots); err != nil {
				return usagef("--slots %d: want a power of two from %d to %d", f.slots, router.MinSlotCount, router.MaxSlotCount)
			}
			st, err := failover.ParseStages(f.stages)
			if err != nil {
				return usagef("--stages: %v", err)
			}
			return a.runPayDemo(f, st)
		},
	}
	cmd.Flags().BoolVar(&f.quick, "quick", false, "a short run: 100 users, stages 1/8,1, 1s bake (about 15s)")
	cmd.Flags().IntVar(&f.users, "users", 300, "users paying")
	cmd.Flags().IntVar(&f.workers, "workers", 8, "concurrent payers")
	cmd.Flags().StringVar(&f.stages, "stages", "1/256,1/8,1/4,1/2,1", "the stages of each move")
	cmd.Flags().DurationVar(&f.bake, "bake", 8*time.Second, "how long each stage soaks under load before the next (0: no soak)")
	cmd.Flags().Float64Var(&f.rate, "rate", 0, "cap on operations per second (0: as fast as the workers go)")
	cmd.Flags().IntVar(&f.slots, "slots", router.DefaultSlotCount, "the map's slot count (a power of two)")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the data directory (etcd data, the cells' SQLite books)")
	return cmd
}

// payDemoReport is what cellctl demo prints at the end (and -o json).
type payDemoReport struct {
	Dir        string             `json:"dir,omitempty"`
	Users      int                `json:"users"`
	Load       load.Stats         `json:"load"`
	Moves      []payDemoMove      `json:"moves"`
	Books      books.Report       `json:"books"`
	OK         bool               `json:"ok"`
	Took       time.Duration      `json:"took"`
	Windows    []payDemoStageLine `json:"-"`
	FailReason string             `json:"failReason,omitempty"`
}

type payDemoMove struct {
	From    string             `json:"from"`
	To      string             `json:"to"`
	Cutover string             `json:"cutover"`
	Status  failover.Status    `json:"status"`
	Took    time.Duration      `json:"took"`
	Stages  []payDemoStageLine `json:"stages"`
}

type payDemoStageLine struct {
	Stage  string        `json:"stage"`
	Slots  int           `json:"slots"`
	Window time.Duration `json:"writeUnavailable"`
	Data   string        `json:"data,omitempty"`
}

func (r payDemoReport) writeTable(w io.Writer) error {
	tw := newTabWriter(w)
	s := r.Load
	fmt.Fprintf(tw, "payments\t%d acknowledged in %s (%.0f/s); %d declined (funds), %d failed\n",
		s.Payments, s.Elapsed.Round(100*time.Millisecond), s.Throughput, s.Declined, s.Failed)
	fmt.Fprintf(tw, "other writes\t%d orders, %d refunds, %d top-ups, %d withdrawals\n",
		s.Ops[load.OpOrder], s.Ops[load.OpRefund], s.Ops[load.OpTopUp], s.Ops[load.OpWithdraw])
	retried := "none"
	if s.Retries > 0 {
		var parts []string
		for k, v := range s.RetriedBy {
			parts = append(parts, fmt.Sprintf("%d after %s", v, k))
		}
		retried = strings.Join(parts, ", ") + " (same request ID: a retry never pays twice)"
	}
	fmt.Fprintf(tw, "retried attempts\t%s\n", retried)
	fmt.Fprintf(tw, "latency (order+pay)\tp50 %v, p99 %v, max %v\n", s.Latency.P50.Round(10*time.Microsecond), s.Latency.P99.Round(10*time.Microsecond), s.Latency.Max.Round(10*time.Microsecond))
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Write-unavailable window of the moved slots, per stage (freeze applied -> flip applied):")
	tw = newTabWriter(w)
	fmt.Fprintln(tw, "  MOVE\tSTAGE\tSLOTS\tWINDOW\tDATA")
	for _, m := range r.Moves {
		for _, st := range m.Stages {
			fmt.Fprintf(tw, "  %s -> %s\t%s\t%d\t%v\t%s\n", m.From, m.To, st.Stage, st.Slots, st.Window.Round(time.Millisecond), st.Data)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The books:")
	for _, inv := range r.Books.Invariants {
		mark := "ok  "
		if !inv.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s\n", mark, inv.Name)
		if inv.Detail != "" {
			fmt.Fprintf(w, "       %s\n", inv.Detail)
		}
		for _, v := range inv.Violations {
			fmt.Fprintf(w, "       - %s\n", v)
		}
	}
	fmt.Fprintln(w)
	if r.OK {
		fmt.Fprintf(w, "All invariants hold; no payment failed. (%s in all)\n", r.Took.Round(100*time.Millisecond))
	} else {
		fmt.Fprintf(w, "FAILED: %s\n", r.FailReason)
	}
	return nil
}

func (a *app) runPayDemo(f *payDemoFlags, stages []failover.StageSpec) (err error) {
	start := time.Now()
	w := io.Discard
	if a.output == "table" {
		w = a.stdout
	}
	say := func(format string, args ...any) { fmt.Fprintf(w, "   "+format+"\n", args...) }
	step := 0
	title := func(s string) { step++; fmt.Fprintf(w, "\n%d. %s\n", step, s) }

	dir, err := os.MkdirTemp("", "cellkit-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if f.keep {
			fmt.Fprintf(w, "\nKept %s (etcd data, the cells' SQLite books).\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			fmt.Fprintf(a.stderr, "could not remove %s: %v\n", dir, rerr)
		}
	}()
	fmt.Fprintln(w, "cellkit demo: four payment cells in two IDCs; IDC-A's users move to IDC-B and back while they pay.")
	fmt.Fprintf(w, "Nothing is installed; everything runs in this process, in %s, and is removed at the end.\n", dir)

	ctx := a.ctx
	title("Start the platform")
	l, err := lab.Start(ctx, lab.Config{Dir: dir, Cluster: demoCluster, SlotCount: f.slots, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("demo: start: %w", err)
	}
	defer l.Close()
	t, err := l.Table(ctx)
	if err != nil {
		return err
	}
	say("etcd       %s (embedded), map epoch %d, %d slots", l.Etcd.ClientURL(), t.Epoch(), t.SlotCount())
	for _, c := range t.Cells() {
		say("cell %-5s %s, paycell over SQLite, %d slots, guard registered in etcd (lease %v), %s",
			c.ID, c.IDC, len(t.SlotsOf(c.ID)), l.Config().LeaseTTL, l.Cell(c.ID).HTTPAddr())
	}
	say("router     %s (cellrouter: the key is the user, order or bank operation in the path)", l.RouterURL)
	say("bank       the virtual bank; its callbacks come back through the router")

	title(fmt.Sprintf("Open %d accounts and top them up through the bank", f.users))
	g, err := load.New(load.Config{BaseURL: l.RouterURL, Users: lab.Users(f.users), Workers: f.workers, Rate: f.rate, InitialBalance: 1_000_000})
	if err != nil {
		return err
	}
	if err := g.Setup(ctx); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	say("%d accounts of 10,000.00 each, credited by the bank's callbacks", f.users)

	title(fmt.Sprintf("Pay: %d workers paying 4 merchants through the router", f.workers))
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	done := make(chan load.Stats, 1)
	go func() { done <- g.Run(lctx) }()
	warm := 3 * time.Second
	if f.quick {
		warm = 2 * time.Second
	}
	if err := sleepCtx(ctx, warm); err != nil {
		return err
	}
	s := g.Stats()
	say("%d payments in %v (%.0f/s), %d failed: orders, payments, partial refunds, top-ups, withdrawals",
		s.Payments, s.Elapsed.Round(100*time.Millisecond), float64(s.Payments)/s.Elapsed.Seconds(), s.Failed)

	rep := payDemoReport{Users: f.users}
	if f.keep {
		rep.Dir = dir
	}
	bake := f.bake
	if bake == 0 {
		bake = time.Millisecond // the runner reads zero as its 10s default
	}
	opts := failover.Options{Auto: true, Bake: bake, BarrierTimeout: 10 * time.Second, DataTimeout: time.Minute}
	var last *failover.State
	for _, mv := range [][2]string{{"IDC-A", "IDC-B"}, {"IDC-B", "IDC-A"}} {
		if mv[0] == "IDC-A" {
			title(fmt.Sprintf("Move IDC-A's users to IDC-B in stages (%s), copying their rows while frozen", f.stages))
		} else {
			title("Move them back to IDC-A: the same stages, reversed")
		}
		view := a.newProgressView()
		if a.output != "table" {
			view = nil
		}
		began := time.Now()
		data := map[string]string{} // stage -> what the mover said
		show := func(p failover.Progress) {
			if p.Kind == kindData && !strings.Contains(p.Message, "prune") {
				data[p.StageName] = p.Message
			}
			if view != nil {
				view.show(p)
			}
		}
		var final *failover.State
		if last == nil {
			final, err = l.Cutover(ctx, fmt.Sprintf("demo: %s to %s under load", mv[0], mv[1]),
				failover.Request{From: failover.Endpoints{IDCs: []string{mv[0]}}, To: failover.Endpoints{IDCs: []string{mv[1]}}, Stages: stages},
				opts, show)
		} else {
			final, err = l.MoveBack(ctx, "demo: back to IDC-A under load", last, opts, show)
		}
		last = final
		if view != nil {
			view.done()
		}
		if err != nil {
			return fmt.Errorf("demo: move %s -> %s: %w", mv[0], mv[1], err)
		}
		m := payDemoMove{From: mv[0], To: mv[1], Cutover: final.ID, Status: final.Status, Took: time.Since(began)}
		for i, sl := range final.Stages {
			m.Stages = append(m.Stages, payDemoStageLine{Stage: sl.Name, Slots: final.Plan.Stages[i].Slots, Window: sl.Window, Data: data[sl.Name]})
		}
		rep.Moves = append(rep.Moves, m)
		if final.Status != failover.StatusDone {
			return fmt.Errorf("demo: move %s -> %s ended %s: %s", mv[0], mv[1], final.Status, final.Reason)
		}
		t, _ := l.Table(ctx)
		var own []string
		for _, c := range t.Cells() {
			own = append(own, fmt.Sprintf("%s %d", c.ID, len(t.SlotsOf(c.ID))))
		}
		say("done in %v; slots now: %s; %d payments so far, %d failed", m.Took.Round(100*time.Millisecond), strings.Join(own, ", "), g.Stats().Payments, g.Stats().Failed)
	}

	title("Stop the load and check the books")
	if err := sleepCtx(ctx, warm); err != nil {
		return err
	}
	stopLoad()
	rep.Load = <-done
	say("waiting for the bank's last callbacks, settling the merchants, reading every cell's books")
	rep.Books, err = l.Books(ctx, g.Acks())
	if err != nil {
		return fmt.Errorf("demo: books: %w", err)
	}
	rep.Took = time.Since(start)
	var why []string
	if rep.Load.Failed > 0 {
		why = append(why, fmt.Sprintf("%d operations failed", rep.Load.Failed))
	}
	for _, inv := range rep.Books.Failed() {
		why = append(why, "invariant failed: "+inv.Name)
	}
	rep.OK, rep.FailReason = len(why) == 0, strings.Join(why, "; ")
	if a.output == "table" {
		fmt.Fprintln(w, "\nReport")
	}
	if err := a.print(rep); err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("demo: %s", rep.FailReason)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		return nil
	}
}
