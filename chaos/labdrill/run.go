package labdrill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/lab"
	"github.com/cellkit/cellkit/lab/load"
)

// Options configure a run.
type Options struct {
	// Dir holds the lab's data (etcd, SQLite books, MariaDB data
	// directories). Required; Run does not remove it.
	Dir string
	// DB is the database when the scenario leaves it open: "sqlite"
	// (default) or "mariadb".
	DB string
	// File names the scenario's file in the report.
	File string
	// OnEvent receives each timeline event as it happens.
	OnEvent func(drill.Event)
	// Logger receives the lab's logs. Default discards.
	Logger *slog.Logger
}

// ErrStep is wrapped by a step that could not run.
var ErrStep = errors.New("drill step failed")

// Run plays sc on a fresh lab and returns its report. An error means the
// drill could not run at all (the lab did not start); a drill that ran
// and failed returns a report with Pass false and its Errors.
func Run(ctx context.Context, sc *drill.Scenario, opt Options) (*drill.Report, error) {
	if opt.Dir == "" {
		return nil, errors.New("labdrill: Dir is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	db := sc.Lab.DB
	if db == "" {
		db = opt.DB
	}
	if db == "" {
		db = "sqlite"
	}
	if db != "sqlite" && db != "mariadb" {
		return nil, fmt.Errorf("labdrill: database %q (want sqlite or mariadb)", db)
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, err
	}
	// The MySQL driver logs every connection a fault breaks to stderr;
	// the report says what broke.
	_ = mysqldriver.SetLogger(log.New(io.Discard, "", 0))
	r := &runner{sc: sc, opt: opt, db: db, faults: map[string]*active{}}
	r.rep = &drill.Report{Scenario: sc.Name, Description: sc.Description, File: opt.File}
	if err := r.startLab(ctx); err != nil {
		r.close()
		return nil, err
	}
	defer r.close()
	r.start = time.Now()
	r.rep.Started = r.start
	r.event("note", fmt.Sprintf("lab up: %s, %d etcd member(s), lease TTL %v, mover %s", r.rep.Lab.DB, r.rep.Lab.EtcdMembers, r.sc.Lab.LeaseTTL, r.rep.Lab.Mover))

	for i, st := range sc.Steps {
		r.event("step", fmt.Sprintf("%d. %s", i+1, st.Label()))
		if err := r.step(ctx, i, st); err != nil {
			r.fail(fmt.Errorf("step %d (%s): %w", i+1, st.Label(), err))
			break
		}
	}
	r.finish(ctx)
	return r.rep, nil
}

type runner struct {
	sc    *drill.Scenario
	opt   Options
	db    string
	l     *lab.Lab
	my    *mysqllab.Lab
	rep   *drill.Report
	start time.Time

	mu sync.Mutex // rep.Timeline, rep.Errors, cut progress

	gen      *load.Generator
	loadStop context.CancelFunc
	loadDone chan load.Stats
	stats    *load.Stats
	users    []string

	faults   map[string]*active
	order    []string // fault names in injection order
	cut      *cutRun  // the last cutover or failover
	lastDone *failover.State
	lostIDCs []string // the IDCs failovers gave up
}

// active is an injected fault.
type active struct {
	idx      int // in rep.Faults
	kind     string
	cells    []string // the cells it hurts ("" = all)
	affected map[string]bool
	heal     func(context.Context) error
	healed   bool
	killedDB string // a server it killed
}

// cutRun is a cutover or failover the drill started.
type cutRun struct {
	idx     int // in rep.Cutovers
	kind    string
	id      string
	from    string
	ctrl    *lab.Controller
	cancel  context.CancelFunc
	done    chan struct{}
	final   *failover.State
	err     error
	ctl     *etcdcutover.Control
	stage   int             // 0-based stage reached
	step    string          // current step
	reached map[string]bool // steps reached so far
	killed  bool
}

func (r *runner) startLab(ctx context.Context) error {
	sc := r.sc.Lab
	cfg := lab.Config{
		Dir: filepath.Join(r.opt.Dir, "lab"), SlotCount: sc.SlotCount, LeaseTTL: sc.LeaseTTL.D(),
		EtcdMembers: sc.EtcdMembers, Faults: true, Logger: r.opt.Logger,
	}
	info := drill.LabInfo{DB: r.db, LeaseTTL: sc.LeaseTTL, FenceMargin: drill.Duration(500 * time.Millisecond),
		EtcdMembers: max(sc.EtcdMembers, 1), SlotCount: sc.SlotCount}
	if r.db == "mariadb" {
		async := sc.Replication == "async"
		info.Replication = "semi-sync"
		if async {
			info.Replication = "async"
		}
		my, err := mysqllab.Start(ctx, mysqllab.Config{Dir: filepath.Join(r.opt.Dir, "mariadb"), Servers: []string{"idc-a", "idc-b"}, Async: async})
		if err != nil {
			return fmt.Errorf("labdrill: MariaDB: %w", err)
		}
		r.my = my
		if err := my.CreateDatabase(ctx, "pay"); err != nil {
			return err
		}
		cfg.MariaDB, cfg.Mover, cfg.Replicated, cfg.RequireSemiSync = my, lab.MoverGTID, true, !async
		cfg.DSN = func(cell string) string {
			for _, c := range lab.DefaultCells() {
				if c.ID == cell {
					return my.DSN(lab.ServerOf(c.IDC), "pay")
				}
			}
			return ""
		}
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		return err
	}
	r.l = l
	info.Mover = l.Config().Mover
	for _, c := range l.Config().Cells {
		info.Cells = append(info.Cells, drill.CellInfo{ID: c.ID, IDC: c.IDC})
	}
	r.rep.Lab = info
	r.users = lab.Users(sc.Users)
	return nil
}

func (r *runner) close() {
	if r.loadStop != nil {
		r.loadStop()
		<-r.loadDone
		r.loadStop = nil
	}
	if c := r.cut; c != nil && c.done != nil {
		c.cancel()
		<-c.done
	}
	for _, name := range r.order {
		if a := r.faults[name]; !a.healed && a.kind == "pulse" {
			_ = a.heal(context.Background())
		}
	}
	if r.my != nil {
		// A lost IDC's server may hold commits waiting for a replica that
		// was severed from it: stop it first, as its cells' shutdown
		// would wait for them.
		for _, idc := range r.lostIDCs {
			_ = r.my.Kill(lab.ServerOf(idc))
		}
	}
	if r.l != nil {
		r.l.Close()
	}
	if r.my != nil {
		r.my.Close()
	}
}

func (r *runner) now() drill.Duration { return drill.Duration(time.Since(r.start)) }

func (r *runner) event(kind, text string) { r.eventAt(time.Now(), kind, text) }

// eventAt records an event that happened at at (detections and
// recoveries are found after the fact).
func (r *runner) eventAt(at time.Time, kind, text string) {
	ev := drill.Event{At: at, Offset: drill.Duration(at.Sub(r.start)), Kind: kind, Text: text}
	if r.start.IsZero() {
		ev.Offset = 0
	}
	r.mu.Lock()
	r.rep.Timeline = append(r.rep.Timeline, ev)
	r.mu.Unlock()
	if r.opt.OnEvent != nil {
		r.opt.OnEvent(ev)
	}
}

func (r *runner) fail(err error) {
	r.mu.Lock()
	r.rep.Errors = append(r.rep.Errors, err.Error())
	r.mu.Unlock()
	r.event("error", err.Error())
}

func (r *runner) step(ctx context.Context, i int, st drill.Step) error {
	switch {
	case st.Load != nil:
		return r.startLoad(ctx, st.Load)
	case st.StopLoad != nil:
		r.stopLoad()
		return nil
	case st.Wait != nil:
		return r.wait(ctx, st.Wait)
	case st.Inject != nil:
		return r.inject(ctx, i, st.Inject)
	case st.Heal != nil:
		return r.healStep(ctx, st.Heal)
	case st.Cutover != nil:
		return r.cutover(ctx, st.Cutover)
	case st.Failover != nil:
		return r.failover(ctx, st.Failover)
	case st.Resume != nil:
		return r.resume(ctx, st.Resume)
	case st.Expect != nil:
		r.checkExpect(ctx, *st.Expect, "at step "+strconv.Itoa(i+1))
		return nil
	}
	return fmt.Errorf("%w: empty step", ErrStep)
}

func (r *runner) startLoad(ctx context.Context, s *drill.LoadStep) error {
	if r.gen != nil {
		return fmt.Errorf("%w: the load is already running", ErrStep)
	}
	// A payment app's client gives up on an attempt after 2s and retries
	// with the same request ID (a request stuck in a partitioned cell
	// must not hold the user for the whole operation timeout).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * max(s.Workers, 8)
	cfg := load.Config{BaseURL: r.l.RouterURL, Users: r.users, Workers: s.Workers, Rate: s.Rate, InitialBalance: 1_000_000, BankEvery: 1 << 30,
		HTTP: &http.Client{Transport: tr, Timeout: 2 * time.Second}}
	if s.Mix == "payments+bank" {
		cfg.BankEvery = 25
	}
	g, err := load.New(cfg)
	if err != nil {
		return err
	}
	if err := g.Setup(ctx); err != nil {
		return fmt.Errorf("load setup: %w", err)
	}
	r.gen = g
	lctx, stop := context.WithCancel(context.Background())
	r.loadStop = stop
	r.loadDone = make(chan load.Stats, 1)
	go func() { r.loadDone <- g.Run(lctx) }()
	r.event("note", fmt.Sprintf("load: %d workers, rate %s, %d users", s.Workers, rateText(s.Rate), len(r.users)))
	return nil
}

func rateText(r float64) string {
	if r == 0 {
		return "unbounded"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func (r *runner) stopLoad() {
	if r.loadStop == nil {
		return
	}
	r.loadStop()
	st := <-r.loadDone
	r.stats = &st
	r.loadStop = nil
	r.event("note", fmt.Sprintf("load stopped: %d payments, %d failed, %d retries", st.Payments, st.Failed, st.Retries))
}

// wait waits for its condition.
func (r *runner) wait(ctx context.Context, w *drill.WaitStep) error {
	if w.For > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.For.D()):
			return nil
		}
	}
	timeout := w.Timeout.D()
	if timeout == 0 {
		timeout = time.Minute
	}
	deadline := time.Now().Add(timeout)
	var base int
	if r.gen != nil {
		base = r.gen.Stats().Payments
	}
	for {
		ok, why, err := r.cond(w, base)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: waited %v until %s: %s", ErrStep, timeout, w.Until, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *runner) cond(w *drill.WaitStep, base int) (bool, string, error) {
	switch w.Until {
	case "payments":
		if r.gen == nil {
			return false, "", fmt.Errorf("%w: no load is running", ErrStep)
		}
		n := r.gen.Stats().Payments - base
		return n >= w.Count, fmt.Sprintf("%d of %d payments", n, w.Count), nil
	case "detected", "recovered":
		name := r.lastFault()
		if name == "" {
			return false, "", fmt.Errorf("%w: no fault injected", ErrStep)
		}
		a := r.faults[name]
		det, rec := r.impact(a)
		if w.Until == "detected" {
			return det != nil, "no affected request has failed yet", nil
		}
		return rec != nil, "affected users not served again yet", nil
	case "stage", "cutover-step", "cutover-done":
		c := r.cut
		if c == nil || c.done == nil {
			return false, "", fmt.Errorf("%w: no cutover running in the background", ErrStep)
		}
		select {
		case <-c.done:
			if w.Until == "cutover-done" || c.killed {
				return true, "", nil
			}
			return false, "", fmt.Errorf("%w: the cutover ended (%s) before %s", ErrStep, c.status(), w.Until)
		default:
		}
		r.mu.Lock()
		want := w.Step
		if want == "data" {
			want = string(failover.StepData)
		}
		stage, step, reached := c.stage, c.step, c.reached[want]
		r.mu.Unlock()
		switch w.Until {
		case "stage":
			return stage >= w.Stage, fmt.Sprintf("at stage %d", stage), nil
		case "cutover-step":
			return reached, "at step " + step, nil
		}
		return false, fmt.Sprintf("at stage %d step %s", stage, step), nil
	}
	return false, "", fmt.Errorf("%w: wait until %q", ErrStep, w.Until)
}

func (c *cutRun) status() string {
	if c.final != nil {
		return string(c.final.Status)
	}
	if c.err != nil {
		return c.err.Error()
	}
	return "running"
}

func (r *runner) lastFault() string {
	if len(r.order) == 0 {
		return ""
	}
	return r.order[len(r.order)-1]
}

// affectedOwners returns the users whose keys the cells own now (all
// users for nil cells).
func (r *runner) affectedOwners(ctx context.Context, cells []string) (map[string]bool, error) {
	out := map[string]bool{}
	if cells == nil {
		for _, u := range r.users {
			out[u] = true
		}
		return out, nil
	}
	t, err := r.l.Table(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range r.users {
		if rt := t.Lookup(u); rt.Cell != nil && slices.Contains(cells, rt.Cell.ID) {
			out[u] = true
		}
	}
	return out, nil
}

// impact measures a fault from the load's view: detected when an affected
// user's attempt first failed after the injection; recovered at the first
// acknowledgement of an affected user after the last failed attempt of
// one (before the next fault, or the end).
func (r *runner) impact(a *active) (detected, recovered *drill.Duration) {
	if r.gen == nil || a.affected == nil {
		return nil, nil
	}
	rec := r.rep.Faults[a.idx]
	from := rec.Injected
	until := time.Now().Add(time.Hour)
	for _, other := range r.rep.Faults[a.idx+1:] {
		until = other.Injected
		break
	}
	var last time.Time
	for _, t := range r.gen.Troubles() {
		if t.At.Before(from) || !t.At.Before(until) || !a.affected[t.Owner] {
			continue
		}
		if detected == nil {
			d := drill.Duration(t.At.Sub(from))
			detected = &d
		}
		last = t.At
	}
	if detected == nil {
		return nil, nil
	}
	for _, ack := range r.gen.Acks() {
		if a.affected[ack.Owner] && ack.At.After(last) && ack.At.Before(until) {
			d := drill.Duration(ack.At.Sub(from))
			if recovered == nil || d < *recovered {
				recovered = &d
			}
		}
	}
	return detected, recovered
}

func (r *runner) checkExpect(ctx context.Context, e drill.Expect, when string) {
	e = e.WithDefaults()
	if e.MaxMTTR > 0 {
		mttr, _ := r.headline()
		c := drill.Check{Name: "MTTR " + when, Want: "<= " + e.MaxMTTR.String()}
		if mttr == nil {
			c.Got = "not measured (no affected request failed, or none recovered)"
			c.OK = false
		} else {
			c.Got, c.OK = mttr.String(), *mttr <= e.MaxMTTR
		}
		r.rep.Checks = append(r.rep.Checks, c)
	}
	if e.MaxDetect > 0 {
		_, det := r.headline()
		c := drill.Check{Name: "time to detect " + when, Want: "<= " + e.MaxDetect.String()}
		if det == nil {
			c.Got = "not detected"
		} else {
			c.Got, c.OK = det.String(), *det <= e.MaxDetect
		}
		r.rep.Checks = append(r.rep.Checks, c)
	}
}

// headline picks the fault the report's MTTR is about: the last kill or
// partition, else the first fault.
func (r *runner) headline() (mttr, detect *drill.Duration) {
	pick := ""
	for _, name := range r.order {
		switch r.faults[name].kind {
		case "kill", "partition":
			pick = name
		}
	}
	if pick == "" && len(r.order) > 0 {
		pick = r.order[0]
	}
	if pick == "" {
		return nil, nil
	}
	det, rec := r.impact(r.faults[pick])
	return rec, det
}

// finish stops the load, waits for a background cutover, checks the
// books and the expectations.
func (r *runner) finish(ctx context.Context) {
	if c := r.cut; c != nil && c.done != nil {
		select {
		case <-c.done:
		case <-time.After(2 * time.Minute):
			r.fail(errors.New("the background cutover did not end within 2 minutes of the last step"))
			c.cancel()
			<-c.done
		}
	}
	r.stopLoad()
	// Faults still on are healed for the checks (a stopped server must run
	// to be read); killed servers stay down.
	for _, name := range r.order {
		a := r.faults[name]
		if a.healed || a.kind == "kill" {
			continue
		}
		r.healOne(ctx, name)
	}
	for _, name := range r.order {
		a := r.faults[name]
		det, rec := r.impact(a)
		f := &r.rep.Faults[a.idx]
		f.Detected, f.Recovered = det, rec
		if det != nil {
			r.eventAt(f.Injected.Add(det.D()), "detect", fmt.Sprintf("%s: first failed request of an affected user %s after injection", name, det))
		}
		if rec != nil {
			r.eventAt(f.Injected.Add(rec.D()), "recovered", fmt.Sprintf("%s: affected users served again %s after injection", name, rec))
		}
	}
	slices.SortStableFunc(r.rep.Timeline, func(a, b drill.Event) int { return a.At.Compare(b.At) })
	mttr, det := r.headline()
	r.rep.MTTR, r.rep.Detect = mttr, det
	r.rep.MTTRNote = "from the injection of the fault to the first acknowledged request of a user whose cell it hit, after the last failed attempt of such a user; time to detect: to that first failed attempt"
	if r.stats != nil {
		s := r.stats
		r.rep.Load = drill.LoadSummary{Payments: s.Payments, Failed: s.Failed, Retries: s.Retries, Declined: s.Declined,
			Throughput: s.Throughput, P50: drill.Duration(s.Latency.P50), P99: drill.Duration(s.Latency.P99), Max: drill.Duration(s.Latency.Max), RetriedBy: s.RetriedBy}
		for _, sec := range s.PerSecond {
			r.rep.Series = append(r.rep.Series, drill.Point{Offset: drill.Duration(sec.At.Sub(r.start)), OK: sec.OK, Failed: sec.Failed, Retries: sec.Retries, Declined: sec.Declined})
		}
	}
	r.books(ctx)
	r.checkExpect(ctx, r.sc.Expect, "at the end")
	r.finalChecks()
	r.rep.Finished = time.Now()
	r.rep.Pass = len(r.rep.Errors) == 0
	for _, c := range r.rep.Checks {
		r.rep.Pass = r.rep.Pass && c.OK
	}
}

// books checks the books of every database still standing.
func (r *runner) books(ctx context.Context) {
	var acks []load.Ack
	if r.gen != nil {
		acks = r.gen.Acks()
	}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if r.my != nil && r.rep.Lab.Replication != "" && len(r.lostIDCs) == 0 {
		// Let the standing servers' replicas apply what they received.
		r.syncStanding(bctx)
	}
	if n := r.l.SeveredWrites(); n > 0 {
		r.event("note", fmt.Sprintf("%d write(s) admitted by the lost IDC's cells before their fence were still waiting on its database when the failover severed it from the survivors: they cannot reach the surviving books (the slot check counts them until the sever)", n))
	}
	rep, err := r.l.Books(bctx, acks)
	if err != nil {
		r.fail(fmt.Errorf("checking the books: %w", err))
		return
	}
	for _, inv := range rep.Invariants {
		r.rep.Invariants = append(r.rep.Invariants, drill.Invariant(inv))
	}
	r.rep.RPO.Lost = len(rep.Missing)
	for _, a := range rep.Missing {
		r.rep.RPO.LostAmount += a.Amount
		r.rep.RPO.Missing = append(r.rep.RPO.Missing, drill.LostOp{Op: string(a.Op), RequestID: a.RequestID, Owner: a.Owner, Amount: a.Amount, Cell: a.Cell, At: a.At})
	}
	switch {
	case len(acks) == 0:
		r.rep.RPO.Note = "no load ran"
	case r.rep.RPO.Lost == 0:
		r.rep.RPO.Note = fmt.Sprintf("all %d acknowledged payments, refunds and bank operations are in the books", len(acks))
	default:
		r.rep.RPO.Note = fmt.Sprintf("%d of %d acknowledged operations are in no surviving cell's books: acknowledged to the user, then lost with the failed IDC", r.rep.RPO.Lost, len(acks))
	}
}

// syncStanding waits (briefly) for each running server to apply what it
// received from the others.
func (r *runner) syncStanding(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for sctx.Err() == nil {
		all := true
		for _, s := range r.my.Servers() {
			all = all && r.my.Running(s)
		}
		if !all {
			return // the survivor applied its relay log during the failover's data gate
		}
		if err := r.my.Sync(sctx); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finalChecks turns the scenario's end expectations into checks.
func (r *runner) finalChecks() {
	e := r.sc.Expect.WithDefaults()
	add := func(name, want, got string, ok bool) {
		r.rep.Checks = append(r.rep.Checks, drill.Check{Name: name, Want: want, Got: got, OK: ok})
	}
	inv := func(prefix string) *drill.Invariant {
		for i := range r.rep.Invariants {
			if strings.HasPrefix(r.rep.Invariants[i].Name, prefix) {
				return &r.rep.Invariants[i]
			}
		}
		return nil
	}
	if len(r.rep.Invariants) == 0 {
		add("books checked", "yes", "no (see errors)", false)
		return
	}
	if n := *e.MaxLost; n >= 0 {
		add("acknowledged operations lost (RPO)", fmt.Sprintf("<= %d", n), strconv.Itoa(r.rep.RPO.Lost), r.rep.RPO.Lost <= n)
	}
	if n := *e.MaxDoubleAdmitted; n >= 0 {
		got := 0
		if i := inv("no slot was written by two cells"); i != nil {
			got = i.Count
		} else {
			add("admission records checked", "yes", "no", false)
		}
		add("writes double-admitted", fmt.Sprintf("<= %d", n), strconv.Itoa(got), got <= n)
	}
	if n := *e.MaxFailed; n >= 0 {
		add("operations failed after all retries", fmt.Sprintf("<= %d", n), strconv.Itoa(r.rep.Load.Failed), r.rep.Load.Failed <= n)
	}
	if *e.MoneyConserved {
		i := inv("money is conserved")
		ok := i != nil && i.OK
		got := "conserved"
		if i == nil {
			got = "not checked"
		} else if !i.OK {
			got = strings.Join(i.Violations, "; ")
		}
		add("money conserved", "yes", got, ok)
	}
	if *e.Invariants {
		var bad []string
		for _, i := range r.rep.Invariants {
			if !i.OK {
				bad = append(bad, i.Name)
			}
		}
		add("every invariant holds", "yes", orText(strings.Join(bad, "; "), "all hold"), len(bad) == 0)
	}
	if e.Cutover != "" {
		got := "none ran"
		if c := r.cut; c != nil {
			got = c.status()
		}
		add("last cutover/failover ends", e.Cutover, got, got == e.Cutover)
	}
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// cellsOfTarget returns the cells a target hurts (nil: all of them).
func (r *runner) cellsOfTarget(target string) ([]string, error) {
	kind, name, _ := strings.Cut(target, ":")
	switch kind {
	case "idc", "db":
		cells := r.l.CellsOf(name)
		if len(cells) == 0 {
			return nil, fmt.Errorf("%w: no cell in IDC %s (the lab's IDCs: %s)", ErrStep, name, strings.Join(r.l.IDCs(), ", "))
		}
		return cells, nil
	case "cell":
		if r.l.IDCOf(name) == "" {
			return nil, fmt.Errorf("%w: no cell %s", ErrStep, name)
		}
		return []string{name}, nil
	}
	return nil, nil
}
