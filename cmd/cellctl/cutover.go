package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/prometheus"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

func (a *app) newCutoverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "cutover",
		Aliases: []string{"co"},
		Short:   "Plan, run, follow and steer staged moves of slots between cells",
		Long: `A cutover moves every slot (and whitelisted key) of some cells to other cells in
stages: by default the canary keys, then 1/256, 1/8, 1/4, 1/2 and all of the
moving slots. Each stage freezes its slots, waits until every live guard has
acked the freeze (barrier), waits for the data gate, flips the owner and bakes
under the SLO gates. When a gate fails, the stage is rolled back the same way
and the cutover holds as failed (resume retries the stage, rollback undoes
the earlier stages too); stages before it stay moved.

One cutover at a time per cluster: the runner holds a lock in etcd and keeps
the workflow record at /cellkit/<cluster>/cutovers/<id>. If the runner dies,
'cellctl cutover resume ID' continues from the recorded step.`,
		Args: noSubcommand,
		RunE: showHelp,
	}
	cmd.AddCommand(
		a.newCutoverPlanCmd(),
		a.newCutoverStartCmd(),
		a.newCutoverStatusCmd(),
		a.newCutoverListCmd(),
		a.newCutoverResumeCmd(),
		a.newCutoverCommandCmd(failover.CmdPause),
		a.newCutoverCommandCmd(failover.CmdAbort),
		a.newCutoverCommandCmd(failover.CmdRollback),
	)
	return cmd
}

// short bounds one etcd request of a long command by --timeout.
func (a *app) short() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, a.timeout)
}

// --- flags ---

// planFlags say what a cutover moves.
type planFlags struct {
	fromIDC, fromCell []string
	toIDC, toCell     []string
	stages            string
	canaries          []string
}

func (pf *planFlags) register(f *pflag.FlagSet, withFrom bool) {
	if withFrom {
		f.StringSliceVar(&pf.fromIDC, "from-idc", nil, "move every cell of this IDC (comma-separated or repeated)")
		f.StringSliceVar(&pf.fromCell, "from-cell", nil, "move these cells (comma-separated or repeated)")
	}
	f.StringSliceVar(&pf.toIDC, "to-idc", nil, "to the active cells of this IDC (comma-separated or repeated)")
	f.StringSliceVar(&pf.toCell, "to-cell", nil, "to these active cells (comma-separated or repeated)")
	f.StringVar(&pf.stages, "stages", "", `the stages, cumulative fractions of the moving slots (default "whitelist,1/256,1/8,1/4,1/2,1")`)
	f.StringArrayVar(&pf.canaries, "canary", nil, "a key the whitelist stage moves first (repeatable; default: the keys whitelisted to the source cells)")
}

// endpoints checks one side (--from-* or --to-*) of a plan.
func endpointsOf(side string, idcs, cells []string, required bool) (failover.Endpoints, error) {
	idcs, cells = trimAll(idcs), trimAll(cells)
	switch {
	case len(idcs) > 0 && len(cells) > 0:
		return failover.Endpoints{}, usagef("--%s-idc and --%s-cell do not go together: give whole IDCs or cells", side, side)
	case len(idcs) == 0 && len(cells) == 0:
		if required {
			return failover.Endpoints{}, usagef("say where the slots go %s with --%s-idc IDC or --%s-cell CELL[,CELL...]", side, side, side)
		}
		return failover.Endpoints{}, nil
	}
	for _, id := range cells {
		if err := checkName("--"+side+"-cell", id); err != nil {
			return failover.Endpoints{}, err
		}
	}
	for _, idc := range idcs {
		if err := checkName("--"+side+"-idc", idc); err != nil {
			return failover.Endpoints{}, err
		}
	}
	return failover.Endpoints{Cells: cells, IDCs: idcs}, nil
}

// checkName checks a cell or IDC name given on the command line.
func checkName(what, name string) error {
	if err := (router.Cell{ID: name, IDC: "x", State: router.StateActive}).Check(); err != nil {
		return usagef("%s %q: want 1-63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric", what, name)
	}
	return nil
}

func trimAll(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// stageSpecs checks --stages and --canary.
func (pf *planFlags) stageSpecs() ([]failover.StageSpec, []string, error) {
	stages := failover.DefaultStages()
	if strings.TrimSpace(pf.stages) != "" {
		var err error
		if stages, err = failover.ParseStages(pf.stages); err != nil {
			return nil, nil, usagef("--stages %q: %s", pf.stages, strings.TrimSuffix(message(err), ": "+failover.ErrBadPlan.Error()))
		}
	}
	if len(pf.canaries) > 0 {
		if !stages[0].Whitelist {
			return nil, nil, usagef("--canary needs the whitelist stage: start --stages with \"whitelist,\"")
		}
		if err := checkPinnable(pf.canaries); err != nil {
			return nil, nil, err
		}
	}
	return stages, pf.canaries, nil
}

// request checks every plan flag and returns the request.
func (pf *planFlags) request() (failover.Request, error) {
	from, err := endpointsOf("from", pf.fromIDC, pf.fromCell, true)
	if err != nil {
		return failover.Request{}, err
	}
	to, err := endpointsOf("to", pf.toIDC, pf.toCell, true)
	if err != nil {
		return failover.Request{}, err
	}
	stages, canaries, err := pf.stageSpecs()
	if err != nil {
		return failover.Request{}, err
	}
	return failover.Request{From: from, To: to, Stages: stages, Canaries: canaries}, nil
}

// optionFlags tune how a new cutover runs.
type optionFlags struct {
	auto                        bool
	bake, barrierTimeout, dataT time.Duration
}

func (of *optionFlags) register(f *pflag.FlagSet, bake, barrier time.Duration) {
	f.BoolVar(&of.auto, "auto", false, "go on to the next stage when a stage's gates pass; without it each stage waits for 'cellctl cutover resume'")
	f.DurationVar(&of.bake, "bake", bake, "how long each stage soaks under the SLO gates after its flip; 0 checks the gates once")
	f.DurationVar(&of.barrierTimeout, "barrier-timeout", barrier, "how long a freeze waits for every live guard to ack it before the stage is unfrozen and fails")
	f.DurationVar(&of.dataT, "data-timeout", 60*time.Second, "how long the data gate may take before the stage is unfrozen and fails")
}

func (of *optionFlags) options() (failover.Options, error) {
	switch {
	case of.bake < 0:
		return failover.Options{}, usagef("--bake %v: want 0 (check the gates once) or a duration like 10s", of.bake)
	case of.barrierTimeout <= 0:
		return failover.Options{}, usagef("--barrier-timeout %v: want a positive duration like 30s", of.barrierTimeout)
	case of.dataT <= 0:
		return failover.Options{}, usagef("--data-timeout %v: want a positive duration like 60s", of.dataT)
	}
	o := failover.Options{Auto: of.auto, Bake: of.bake, BarrierTimeout: of.barrierTimeout, DataTimeout: of.dataT}
	if o.Bake == 0 {
		o.Bake = -1 // the engine's "no soak": zero would mean its default
	}
	return o, nil
}

// runFlags say how this process runs a cutover: the data mover and the SLO
// gates. They are not stored in the record: give them again on resume.
type runFlags struct {
	mover        string
	dbs          []string // --db CELL=DSN
	semiSync     bool
	gateInterval time.Duration
	probeURL     string
	probeKeys    int
	promURL      string
	promGates    []string
	promEmptyOK  bool

	dsns  map[string]sqldb.DSN // parsed --db, by checkMover
	gates []failover.Gate      // built by check
	prom  []*prometheus.Gate   // the Prometheus gates among them, closed by close
}

func (rf *runFlags) register(f *pflag.FlagSet) {
	f.StringVar(&rf.mover, "mover", "none", `the data gate: "none" (stateless services), "copy" (copy paycell's rows between the cells' databases while frozen, then prune) or "mysql-gtid" (wait for MariaDB/MySQL GTID replication)`)
	f.StringArrayVar(&rf.dbs, "db", nil, "a cell's database for --mover copy or mysql-gtid: CELL=DSN, DSN sqlite:PATH or mysql://USER[:PASS]@HOST:PORT/DB (repeat for every cell)")
	f.BoolVar(&rf.semiSync, "require-semi-sync", false, "mysql-gtid: refuse to flip unless semi-synchronous replication is on from source to target")
	f.DurationVar(&rf.gateInterval, "gate-interval", time.Second, "the pause between two checks of the gates during a bake")
	f.StringVar(&rf.probeURL, "probe-url", "", "probe gate: GET this URL for keys of the moved slots, {key} replaced by the key; each must answer 2xx within 2s")
	f.IntVar(&rf.probeKeys, "probe-keys", 8, "probe gate: keys probed per check")
	f.StringVar(&rf.promURL, "prom-url", "", "Prometheus gates: the Prometheus server, e.g. http://prometheus:9090")
	f.StringArrayVar(&rf.promGates, "gate", nil, `Prometheus gate: 'PROMQL OP THRESHOLD', e.g. 'sum(rate(pay_errors_total[1m])) < 0.5' (repeatable; needs --prom-url)`)
	f.BoolVar(&rf.promEmptyOK, "gate-pass-on-empty", false, "Prometheus gates: a query that returns no series passes (error-rate queries return none while there are no errors)")
}

// check validates the run flags and builds the gates, before etcd is dialed.
func (rf *runFlags) check() error {
	if err := rf.checkMover(); err != nil {
		return err
	}
	if rf.gateInterval <= 0 {
		return usagef("--gate-interval %v: want a positive duration like 1s", rf.gateInterval)
	}
	rf.gates = nil
	if rf.probeURL != "" {
		if rf.probeKeys <= 0 {
			return usagef("--probe-keys %d: want 1 or more", rf.probeKeys)
		}
		if err := checkProbeURL(rf.probeURL); err != nil {
			return err
		}
		rf.gates = append(rf.gates, failover.ProbeGate{Probe: httpProber(rf.probeURL), Keys: rf.probeKeys})
	}
	rf.close()
	rf.prom = nil
	if len(rf.promGates) == 0 {
		if rf.promURL != "" {
			return usagef("--prom-url without --gate: give each condition as --gate 'QUERY OP NUMBER'")
		}
		return nil
	}
	if rf.promURL == "" {
		return usagef("--gate needs --prom-url: the Prometheus server that evaluates it, e.g. http://prometheus:9090")
	}
	for _, spec := range rf.promGates {
		cfg, err := prometheus.ParseSpec(spec)
		if err != nil {
			return usagef("--gate: %s", message(err))
		}
		cfg.URL, cfg.PassOnEmpty = rf.promURL, rf.promEmptyOK
		g, err := prometheus.NewGate(cfg)
		if err != nil {
			var ce *prometheus.ConfigError
			if errors.As(err, &ce) && ce.Field == "URL" {
				return usagef("--prom-url %s", ce.Reason)
			}
			return usagef("--gate %q: %s", spec, message(err))
		}
		rf.prom = append(rf.prom, g)
		rf.gates = append(rf.gates, g)
	}
	return nil
}

// close lets go of the Prometheus gates' connections.
func (rf *runFlags) close() {
	for _, g := range rf.prom {
		g.CloseIdleConnections()
	}
}

func (rf *runFlags) describe() string {
	var names []string
	for _, g := range rf.gates {
		names = append(names, g.Name())
	}
	gates := "no gates"
	if len(names) > 0 {
		gates = "gates " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("mover %s, %s", rf.mover, gates)
}

// --- the probe gate ---

// probeTimeout bounds one probe request.
const probeTimeout = 2 * time.Second

// probeClient sends the probes; no keep-alive, so nothing lingers after
// the command.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}

// expandProbeURL puts key into the template's {key} placeholders, escaped
// for where each stands: the path, or the query after '?'.
func expandProbeURL(tmpl, key string) string {
	q := strings.IndexByte(tmpl, '?')
	var b strings.Builder
	off := 0
	for {
		i := strings.Index(tmpl[off:], "{key}")
		if i < 0 {
			b.WriteString(tmpl[off:])
			return b.String()
		}
		b.WriteString(tmpl[off : off+i])
		if q >= 0 && off+i > q {
			b.WriteString(url.QueryEscape(key))
		} else {
			b.WriteString(url.PathEscape(key))
		}
		off += i + len("{key}")
	}
}

func checkProbeURL(tmpl string) error {
	if !strings.Contains(tmpl, "{key}") {
		return usagef("--probe-url %q: put {key} where the key goes, e.g. http://cellrouter:8080/probe/{key}", tmpl)
	}
	u, err := url.Parse(expandProbeURL(tmpl, "k"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--probe-url %q: want an http:// or https:// URL with {key}, e.g. http://cellrouter:8080/probe/{key}", tmpl)
	}
	return nil
}

// httpProber probes a key with a GET of the URL template; 2xx within
// probeTimeout is served.
func httpProber(tmpl string) failover.Prober {
	return func(ctx context.Context, key string) error {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, expandProbeURL(tmpl, key), nil)
		if err != nil {
			return err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no answer within %v", probeTimeout)
			}
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("HTTP %s", resp.Status)
		}
		return nil
	}
}

// --- cutover IDs ---

var cutoverIDRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,118}[A-Za-z0-9])?$`)

func checkCutoverID(flag, id string) error {
	if !cutoverIDRe.MatchString(id) {
		return usagef("%s %q: want a cutover ID like cut-20261121-031502-9f3a (1-120 of A-Z a-z 0-9 . _ -)", flag, id)
	}
	return nil
}

// --- plan ---

func (a *app) newCutoverPlanCmd() *cobra.Command {
	var pf planFlags
	cmd := &cobra.Command{
		Use:   "plan (--from-idc IDC | --from-cell CELL,...) (--to-idc IDC | --to-cell CELL,...) [--stages LIST] [--canary KEY ...]",
		Short: "Show what each stage of a cutover would move; changes nothing",
		Long: `Show what each stage of a cutover would move, on the current map; changes
nothing. Per stage: the slots (or canary keys) it adds, the slots moved once it
is done, the share of all users they hold, and the target cells.

Stages are cumulative fractions of the moving slots, each spread over the slot
space; targets are balanced by slot count. The whitelist stage moves the canary
keys: --canary KEY (repeatable), by default the keys whitelisted to the source
cells. Plans are deterministic: the same map and flags give the same plan.`,
		Example: `  cellctl cutover plan --from-idc IDC-A --to-idc IDC-B
  cellctl cutover plan --from-cell a2 --to-cell b1,b2 --stages 1/16,1/2,1
  cellctl cutover plan --from-idc IDC-A --to-idc IDC-B --canary u42 --canary u1001 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := pf.request()
			if err != nil {
				return err
			}
			return a.dryRun(func(*router.Table) (failover.Request, error) { return req, nil }, nil)
		},
	}
	pf.register(cmd.Flags(), true)
	return cmd
}

// planOn plans req on t; a refused plan is a usage error (the flags named
// something the map does not allow).
func planOn(t *router.Table, req failover.Request) (*failover.Plan, error) {
	p, err := failover.NewPlan(t, req)
	if err != nil {
		return nil, asUsage(fmt.Errorf("%s (map epoch %d)", strings.TrimSuffix(message(err), ": "+failover.ErrBadPlan.Error()), t.Epoch()))
	}
	return p, nil
}

// dryRun prints the plan of a request on the current map.
func (a *app) dryRun(request func(*router.Table) (failover.Request, error), note *dryRunNote) error {
	t, err := a.current()
	if err != nil {
		return err
	}
	req, err := request(t)
	if err != nil {
		return err
	}
	p, err := planOn(t, req)
	if err != nil {
		return err
	}
	return a.print(planView{Cluster: a.cluster, plan: p, t: t, note: note})
}

// planView is a plan for people; as JSON it is the failover.Plan.
type planView struct {
	Cluster string
	plan    *failover.Plan
	t       *router.Table
	note    *dryRunNote
}

// dryRunNote is what start --dry-run adds under the plan.
type dryRunNote struct {
	options failover.Options
	run     string
}

func (v planView) MarshalJSON() ([]byte, error) { return json.Marshal(v.plan) }

func (v planView) writeTable(w io.Writer) error {
	p := v.plan
	moving := fmt.Sprintf("%d of %d slots (%s of users)", p.Moving, p.SlotCount, percent(float64(p.Moving)/float64(p.SlotCount)))
	if keys := canaryCount(p); keys > 0 {
		moving += " and " + plural(keys, "whitelisted key", "whitelisted keys")
	}
	row(w, "cluster", v.Cluster)
	row(w, "map epoch", p.Epoch)
	row(w, "from", cellsInIDCs(v.t, p.From))
	row(w, "to", cellsInIDCs(v.t, p.To))
	row(w, "moving", moving)
	row(w, "stages", len(p.Stages))
	fmt.Fprintln(w)
	row(w, "STAGE", "ADDS", "SLOTS MOVED", "USERS", "TARGETS", "KEYS")
	for _, st := range p.Stages {
		var keys []string
		for _, k := range st.Keys {
			keys = append(keys, k.Key)
		}
		row(w, st.Name, stageAdds(st), st.Cumulative, users(st), targets(st), orDash(listSome(keys, 5)))
	}
	if n := v.note; n != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "dry run: nothing was changed")
		fmt.Fprintf(w, "without --dry-run the cutover runs with %s; %s\n", optionsString(n.options), n.run)
	}
	return nil
}

func canaryCount(p *failover.Plan) int {
	n := 0
	for _, st := range p.Stages {
		n += len(st.Keys)
	}
	return n
}

// stageAdds says what a stage moves: "64 slots", "2 keys", or "nothing".
func stageAdds(st failover.Stage) string {
	var parts []string
	if st.Slots > 0 {
		parts = append(parts, plural(st.Slots, "slot", "slots"))
	}
	if len(st.Keys) > 0 {
		parts = append(parts, plural(len(st.Keys), "key", "keys"))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// targets lists the target cells of a stage with what each receives.
func targets(st failover.Stage) string {
	slots, keys := map[string]int{}, map[string]int{}
	var cells []string
	for _, m := range st.Moves {
		if slots[m.To] == 0 && keys[m.To] == 0 {
			cells = append(cells, m.To)
		}
		slots[m.To] += m.Last - m.First + 1
	}
	for _, k := range st.Keys {
		if slots[k.To] == 0 && keys[k.To] == 0 {
			cells = append(cells, k.To)
		}
		keys[k.To]++
	}
	sort.Strings(cells)
	var out []string
	for _, c := range cells {
		var what []string
		if slots[c] > 0 {
			what = append(what, fmt.Sprint(slots[c]))
		}
		if keys[c] > 0 {
			what = append(what, plural(keys[c], "key", "keys"))
		}
		out = append(out, fmt.Sprintf("%s (%s)", c, strings.Join(what, "+")))
	}
	return joinOrDash(out, ", ")
}

// users is the share of all users a stage has moved once it is done; "-"
// for a stage of canary keys alone.
func users(st failover.Stage) string {
	if st.Slots == 0 && st.Cumulative == 0 {
		return "-"
	}
	return percent(st.Share)
}

// percent renders a share of users: "0.20%", "12.5%".
func percent(share float64) string {
	p := share * 100
	switch {
	case p == 0:
		return "0%"
	case p < 1:
		return fmt.Sprintf("%.2f%%", p)
	}
	return fmt.Sprintf("%.1f%%", p)
}

// cellsInIDCs groups cells by IDC: "a1, a2 in IDC-A; c1 in IDC-C".
func cellsInIDCs(t *router.Table, cells []string) string {
	by := map[string][]string{}
	var idcs []string
	for _, id := range cells {
		c, _ := t.Cell(id)
		if _, seen := by[c.IDC]; !seen {
			idcs = append(idcs, c.IDC)
		}
		by[c.IDC] = append(by[c.IDC], id)
	}
	sort.Strings(idcs)
	var out []string
	for _, idc := range idcs {
		out = append(out, strings.Join(by[idc], ", ")+" in "+idc)
	}
	return strings.Join(out, "; ")
}

func optionsString(o failover.Options) string {
	var parts []string
	switch {
	case o.Emergency:
		parts = append(parts, "emergency")
	case o.Auto:
		parts = append(parts, "auto")
	default:
		parts = append(parts, "manual (each stage waits for resume)")
	}
	if o.Drain {
		parts = append(parts, "drain")
	}
	bake := "bake " + o.Bake.String()
	if o.Bake < 0 {
		bake = "no bake (gates checked once)"
	}
	parts = append(parts, bake, "barrier timeout "+o.BarrierTimeout.String(), "data timeout "+o.DataTimeout.String())
	return strings.Join(parts, ", ")
}

// --- start ---

func (a *app) newCutoverStartCmd() *cobra.Command {
	var (
		pf     planFlags
		of     optionFlags
		rf     runFlags
		dry    bool
		idFlag string
	)
	cmd := &cobra.Command{
		Use:   "start (--from-idc IDC | --from-cell CELL,...) (--to-idc IDC | --to-cell CELL,...) --reason WHY [--auto] [--dry-run]",
		Short: "Start a cutover and run it, showing progress",
		Long: `Start a cutover and run it in this process, showing progress: on a terminal a
live status line (stage, step, frozen-window timer, acks, gates), in a pipe one
line per event, with -o json one JSON object per event.

Without --auto the cutover stops after each stage in status "waiting"; the
command then exits 0 and prints the command that continues it
('cellctl cutover resume ID'). With --auto it goes on while the gates pass.

Gates (checked during each stage's bake; a failure rolls the stage back):
  --probe-url URL            GET URL with {key} replaced by keys of the moved slots; 2xx within 2s
  --prom-url URL --gate 'Q'  a PromQL query with a threshold, e.g. 'sum(rate(errors[1m])) < 1'
Gate and mover flags (--mover, --db) are not stored in the record: give them again to resume.

Ctrl-C stops the runner; the record keeps the step and 'cutover resume ID'
continues it. Exit 0 when the cutover is done, waiting or paused; 7 when it
failed, was aborted or rolled back, or the runner stopped midway.`,
		Example: `  cellctl cutover start --from-idc IDC-A --to-idc IDC-B --reason "drill 2026-11" --dry-run
  cellctl cutover start --from-idc IDC-A --to-idc IDC-B --reason "drill 2026-11"
  cellctl cutover start --from-cell a2 --to-cell b3 --stages 1/8,1 --auto --bake 30s \
      --probe-url 'http://cellrouter:8080/probe/{key}' --reason "rebalance OPS-1234"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.requireReason(); err != nil {
				return err
			}
			req, err := pf.request()
			if err != nil {
				return err
			}
			opts, err := of.options()
			if err != nil {
				return err
			}
			if err := rf.check(); err != nil {
				return err
			}
			defer rf.close()
			if idFlag != "" {
				if err := checkCutoverID("--id", idFlag); err != nil {
					return err
				}
			}
			spec := &launchSpec{
				kind: "cut", id: idFlag, opts: opts, why: a.reason,
				request: func(*router.Table) (failover.Request, error) { return req, nil },
			}
			if dry {
				return a.dryRun(spec.request, &dryRunNote{options: opts.WithDefaults(), run: rf.describe()})
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
	pf.register(f, true)
	of.register(f, 10*time.Second, 30*time.Second)
	rf.register(f)
	f.BoolVar(&dry, "dry-run", false, "print the plan and the options; change nothing")
	f.StringVar(&idFlag, "id", "", "the cutover's ID (default cut-<UTC time>-<random>)")
	return cmd
}

// launchSpec is a new cutover: what start, drain and failover have in common.
type launchSpec struct {
	kind string // ID prefix
	id   string // given with --id, else made from kind
	opts failover.Options
	why  string
	// request says what to move, given the current map.
	request func(*router.Table) (failover.Request, error)
	// prepare, if set, runs under the lock once the plan checked out and no
	// other cutover is in progress, and returns the map to plan on (drain
	// marks the cell draining; failover checks for live guards).
	prepare func(s *session, ctl *etcdcutover.Control, t *router.Table, p *failover.Plan) (*router.Table, error)
	// after, if set, runs under the lock once the run ended and its result
	// was printed (err is that result): drain and failover print more, and
	// failover moves the keys pinned to the lost cells.
	after func(s *session, ctl *etcdcutover.Control, final *failover.State, err error) error
}

// launch takes the lock, plans on the current map, creates the record and
// runs the cutover.
func (a *app) launch(s *session, spec *launchSpec, rf *runFlags) error {
	ctl, err := a.lock(s, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	final, err := a.launchLocked(s, ctl, spec, rf)
	if spec.after != nil && final != nil {
		if aerr := spec.after(s, ctl, final, err); err == nil {
			err = aerr
		}
	}
	return err
}

// launchLocked plans, creates and runs a cutover under the lock ctl holds.
// final is nil when nothing was created.
func (a *app) launchLocked(s *session, ctl *etcdcutover.Control, spec *launchSpec, rf *runFlags) (final *failover.State, err error) {
	ctx, cancel := a.short()
	defer cancel()
	t, err := ctl.Table(ctx)
	if err != nil {
		return nil, a.etcdErr(err)
	}
	req, err := spec.request(t)
	if err != nil {
		return nil, err
	}
	p, err := planOn(t, req)
	if err != nil {
		return nil, err
	}
	active, err := ctl.Records().Active(ctx)
	if err != nil {
		return nil, a.etcdErr(err)
	}
	if active != nil {
		return nil, busyErr(active)
	}
	cancel()
	if spec.prepare != nil {
		if t, err = spec.prepare(s, ctl, t, p); err != nil {
			return nil, err
		}
		if p, err = planOn(t, req); err != nil {
			return nil, err
		}
	}

	now := time.Now()
	id := spec.id
	if id == "" {
		id = failover.NewID(spec.kind, now)
	}
	st := failover.NewState(id, a.actor, spec.why, p, spec.opts, now)
	ctx, cancel = a.short()
	defer cancel()
	if err := ctl.Create(ctx, st); err != nil {
		if errors.Is(err, etcdcutover.ErrExists) {
			return nil, &hintError{fmt.Errorf("cutover %s already exists: %w", id, etcdcutover.ErrExists), "pick another --id, or drop --id for a fresh one"}
		}
		return nil, a.etcdErr(err)
	}
	if a.output == "table" {
		what := plural(p.Moving, "slot", "slots")
		if n := canaryCount(p); n > 0 {
			what += " and " + plural(n, "whitelisted key", "whitelisted keys")
		}
		fmt.Fprintf(a.stdout, "cutover %s: %s from %s to %s in %s\n  %s; %s\n\n",
			id, what, cellsInIDCs(t, p.From), cellsInIDCs(t, p.To),
			plural(len(p.Stages), "stage", "stages"), optionsString(st.Options), rf.describe())
	}
	final, runErr := a.runCutover(ctl, st, failover.Event{Kind: failover.EvStart, At: time.Now()}, rf)
	return final, a.finish(s, final, runErr, goalForward)
}

func busyErr(active *failover.State) error {
	return &hintError{
		fmt.Errorf("cutover %s is %s (stage %s, started by %s: %s); one cutover at a time: %w",
			active.ID, active.Status, stageOf(active), active.Who, oneLine(active.Why), etcdcutover.ErrBusy),
		fmt.Sprintf("`cellctl cutover status %[1]s` shows it; `cellctl cutover resume %[1]s` finishes it, `cellctl cutover abort %[1]s --reason WHY` ends it", active.ID),
	}
}

// lockConfig is how this process holds the cutover lock.
func (a *app) lockConfig() etcdcutover.Config {
	return etcdcutover.Config{
		Cluster: a.cluster,
		Actor:   a.actor,
		Logger:  slog.New(slog.NewTextHandler(&lockedWriter{w: a.stderr}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// lock takes the cutover lock: at once (wait 0), or waiting up to wait for
// a runner that died to lose it. A lock that stays held is reported with
// the cutover its holder runs.
func (a *app) lock(s *session, wait time.Duration) (*etcdcutover.Control, error) {
	var ctl *etcdcutover.Control
	var err error
	if wait > 0 {
		ctx, cancel := context.WithTimeout(a.ctx, wait)
		ctl, err = etcdcutover.Acquire(ctx, s.cli, a.lockConfig())
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) && a.ctx.Err() == nil {
			err = fmt.Errorf("still held after %v (--lock-wait): %w", wait, etcdcutover.ErrLocked)
		}
	} else {
		ctx, cancel := a.short()
		ctl, err = etcdcutover.TryAcquire(ctx, s.cli, a.lockConfig())
		cancel()
	}
	if err == nil {
		return ctl, nil
	}
	if !errors.Is(err, etcdcutover.ErrLocked) {
		return nil, a.etcdErr(err)
	}
	return nil, a.lockedErr(s, err)
}

// lockedErr names what the lock's holder is running.
func (a *app) lockedErr(s *session, err error) error {
	ctx, cancel := a.short()
	defer cancel()
	rec, rerr := etcdcutover.NewRecords(s.cli, a.cluster)
	var active *failover.State
	if rerr == nil {
		active, rerr = rec.Active(ctx)
	}
	if rerr != nil || active == nil {
		return &hintError{
			fmt.Errorf("another cellctl holds the cutover lock but no cutover is in progress yet: %w", err),
			"it is starting one (or marking a cell draining); `cellctl cutover list` shows it in a moment",
		}
	}
	return &hintError{
		fmt.Errorf("cutover %s is being run by another cellctl (%s, stage %s, step %s; started by %s: %s); one cutover at a time: %w",
			active.ID, active.Status, stageOf(active), active.Step, active.Who, oneLine(active.Why), err),
		fmt.Sprintf("`cellctl cutover status --watch %[1]s` follows it; `cellctl cutover pause|abort|rollback %[1]s --reason WHY` steers it", active.ID),
	}
}

// lockedWriter serializes writes from the runner's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// errLockLost is the cause given to a run whose lease expired.
var errLockLost = fmt.Errorf("this runner's etcd lease expired (etcd unreachable for longer than the lock TTL?): %w", failover.ErrLockLost)

// runCutover runs st from ev until it holds or ends, showing progress.
// Losing the lock or an interrupt stops it; the record keeps the step.
func (a *app) runCutover(ctl *etcdcutover.Control, st *failover.State, ev failover.Event, rf *runFlags) (*failover.State, error) {
	mover, closeMover, err := rf.buildMover(a.ctx, ctl.Table)
	if err != nil {
		return st, err
	}
	defer closeMover()
	view := a.newProgressView()
	defer view.done()
	r := &failover.Runner{
		Control:      ctl,
		Mover:        mover,
		Gates:        rf.gates,
		GateInterval: rf.gateInterval,
		OnProgress:   view.show,
	}
	ctx, cancel := context.WithCancelCause(a.ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-ctl.Lost():
			cancel(errLockLost)
		case <-ctx.Done():
		}
	}()
	return r.Run(ctx, st, ev)
}

// goal is what a command wants of the cutover it runs.
type goal int

const (
	goalForward  goal = iota // start, resume, drain, failover: done, or held waiting or paused
	goalPause                // held, or a pause recorded
	goalAbort                // aborted
	goalRollback             // rolled back
)

// finish reports how a run ended: the record for people, and an error
// (exit 7) unless the cutover is where the command wanted it.
func (a *app) finish(s *session, st *failover.State, runErr error, g goal) error {
	if a.output == "table" {
		fmt.Fprintln(a.stdout)
		ctx, cancel := a.short()
		cmd := a.storedCommand(ctx, s, st.ID)
		cancel()
		printResult(a.stdout, "table", statusView{st: st, command: cmd})
	}
	if runErr != nil {
		return stoppedErr(st, runErr)
	}
	ok := false
	switch g {
	case goalForward:
		ok = st.Status == failover.StatusDone || st.Status == failover.StatusWaiting || st.Status == failover.StatusPaused
	case goalPause:
		ok = st.Status != failover.StatusRunning || st.Pending == failover.CmdPause
	case goalAbort:
		ok = st.Status == failover.StatusAborted
	case goalRollback:
		ok = st.Status == failover.StatusRolledBack
	}
	if ok {
		return nil
	}
	return notFinishedErr(st)
}

// errNotFinished is wrapped by the error of a command whose cutover did not
// end as asked; it exits 7.
var errNotFinished = errors.New("the cutover did not finish")

// hintError carries its own hint.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// stoppedErr: the runner stopped midway. Its cause is only named: an
// interrupt must not turn the whole message into "interrupted".
func stoppedErr(st *failover.State, cause error) error {
	h := fmt.Sprintf("continue it with `cellctl cutover resume %[1]s`, or end it with `cellctl cutover abort %[1]s --reason WHY`", st.ID)
	if st.Frozen() {
		h += "; until then the slots of stage " + st.StageName() + " may stay frozen (writes to them wait)"
	}
	if errors.Is(cause, failover.ErrLockLost) {
		h = fmt.Sprintf("another runner may have taken over: `cellctl cutover status %s`; if none did, ", st.ID) + h
	}
	return &hintError{fmt.Errorf("cutover %s stopped at stage %s, step %s: %s; the record keeps the step: %w",
		st.ID, stageOf(st), st.Step, message(cause), errNotFinished), h}
}

// notFinishedErr: the cutover held or ended other than as asked.
func notFinishedErr(st *failover.State) error {
	var h string
	switch st.Status {
	case failover.StatusFailed:
		what := "the stage"
		if st.Rollback != nil {
			what = "the rollback"
		}
		h = fmt.Sprintf("the reason above says what failed; fix it, then `cellctl cutover resume %[1]s` retries %[2]s, or `cellctl cutover rollback %[1]s --reason WHY` / `abort` ends it", st.ID, what)
	case failover.StatusAborted:
		h = fmt.Sprintf("stages that had flipped stay flipped; `cellctl cutover status %s` lists them", st.ID)
	case failover.StatusRolledBack:
		h = "what it moved is back with its source cells"
	case failover.StatusRunning:
		h = fmt.Sprintf("`cellctl cutover status %s` shows where it is", st.ID)
	default:
		h = fmt.Sprintf("`cellctl cutover status %s`", st.ID)
	}
	return &hintError{fmt.Errorf("cutover %s is %s: %s: %w", st.ID, st.Status, orDash(st.Reason), errNotFinished), h}
}

// stageOf is "3/6 1/8".
func stageOf(st *failover.State) string {
	return fmt.Sprintf("%d/%d %s", st.Stage+1, len(st.Plan.Stages), st.StageName())
}

// --- status and list ---

func (a *app) records(s *session) (*etcdcutover.Records, error) {
	return etcdcutover.NewRecords(s.cli, a.cluster)
}

// getRecord reads one record; a missing one names the command that lists them.
func (a *app) getRecord(s *session, rec *etcdcutover.Records, id string) (*failover.State, error) {
	ctx, cancel := a.short()
	defer cancel()
	st, _, err := rec.Get(ctx, id)
	if errors.Is(err, etcdcutover.ErrNotFound) {
		return nil, &hintError{fmt.Errorf("no cutover %q in cluster %s: %w", id, a.cluster, etcdcutover.ErrNotFound), "`cellctl cutover list` lists the cutovers"}
	}
	return st, a.etcdErr(err)
}

// storedCommand is the operator command stored for id and not yet taken by
// its runner, if any.
func (a *app) storedCommand(ctx context.Context, s *session, id string) *failover.CommandMsg {
	rec, err := a.records(s)
	if err != nil {
		return nil
	}
	m, _ := rec.Pending(ctx, id)
	return m
}

func (a *app) newCutoverStatusCmd() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status [ID] [--watch]",
		Short: "Show a cutover's record: status, stage, step, per-stage epochs and windows",
		Long: `Show a cutover's record: status, stage k of n, step, who started it and why,
each stage's epochs, write-unavailable window (freeze to flip), verification
and rollback, and any operator command not yet taken by the runner.

Without ID: the cutover in progress, else the newest. --watch follows the
record, one line per change, until it is done, aborted or rolled back (Ctrl-C
stops watching and changes nothing). -o json prints the record itself.`,
		Example: `  cellctl cutover status
  cellctl cutover status cut-20261121-031502-9f3a -o json
  cellctl cutover status --watch`,
		Args: rangeArgs(0, 1, "at most one cutover ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if err := checkCutoverID("cutover ID", args[0]); err != nil {
					return err
				}
			}
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			rec, err := a.records(s)
			if err != nil {
				return err
			}
			var st *failover.State
			if len(args) == 1 {
				if st, err = a.getRecord(s, rec, args[0]); err != nil {
					return err
				}
			} else if st, err = a.defaultRecord(rec); err != nil {
				return err
			}
			if watch {
				return a.watch(rec, st)
			}
			ctx, cancel := a.short()
			defer cancel()
			return a.print(statusView{st: st, command: a.storedCommand(ctx, s, st.ID)})
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the record until the cutover is done, aborted or rolled back")
	return cmd
}

// defaultRecord is the cutover in progress, else the newest.
func (a *app) defaultRecord(rec *etcdcutover.Records) (*failover.State, error) {
	ctx, cancel := a.short()
	defer cancel()
	list, err := rec.List(ctx)
	if err != nil && len(list) == 0 {
		return nil, a.etcdErr(err)
	}
	for _, st := range list {
		if !st.Status.Terminal() {
			return st, nil
		}
	}
	if err != nil {
		// A corrupt record may be the one in progress: say so rather than
		// show an older one as if it were current.
		return nil, a.etcdErr(err)
	}
	if len(list) == 0 {
		return nil, &hintError{fmt.Errorf("no cutovers in cluster %s: %w", a.cluster, etcdcutover.ErrNotFound), "`cellctl cutover plan` and `cellctl cutover start` begin one"}
	}
	return list[0], nil
}

// watch prints the record each time it changes until it is terminal.
func (a *app) watch(rec *etcdcutover.Records, st *failover.State) error {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	for next := range rec.Follow(ctx, st.ID) {
		a.printChange(next)
	}
	// Ctrl-C is how a watch ends: not an error.
	return nil
}

// printChange writes one line (or JSON object) for a changed record.
func (a *app) printChange(st *failover.State) {
	switch a.output {
	case "json":
		b, _ := json.Marshal(st)
		fmt.Fprintf(a.stdout, "%s\n", b)
	case "yaml":
		fmt.Fprintln(a.stdout, "---")
		printResult(a.stdout, "yaml", statusView{st: st})
	default:
		what := st.Reason
		if st.Pending != failover.CmdNone {
			what = strings.TrimPrefix(what+"; ", "; ") + string(st.Pending) + " requested"
		}
		fmt.Fprintf(a.stdout, "%s  %s  %s  stage %s  %s  %s\n", st.Updated.UTC().Format("15:04:05.000"), st.ID, st.Status, stageOf(st), st.Step, orDash(oneLine(what)))
	}
}

// statusView is one record for people; as JSON it is the failover.State.
type statusView struct {
	st      *failover.State
	command *failover.CommandMsg
}

func (v statusView) MarshalJSON() ([]byte, error) { return json.Marshal(v.st) }

func (v statusView) writeTable(w io.Writer) error {
	st := v.st
	status := string(st.Status)
	if status == "" {
		status = "created (not started)"
	}
	row(w, "cutover", st.ID)
	row(w, "status", status)
	row(w, "stage", stageOf(st))
	row(w, "step", orDash(string(st.Step)))
	if st.Reason != "" {
		row(w, "reason", oneLine(st.Reason))
	}
	row(w, "from", strings.Join(st.Plan.From, ", "))
	row(w, "to", strings.Join(st.Plan.To, ", "))
	row(w, "who", st.Who)
	row(w, "why", oneLine(st.Why))
	row(w, "options", optionsString(st.Options))
	row(w, "created", st.Created.UTC().Format(time.DateTime+" UTC"))
	row(w, "updated", st.Updated.UTC().Format(time.DateTime+" UTC"))
	if st.Pending != failover.CmdNone {
		row(w, "pending", string(st.Pending)+" (recorded; acted on at the next stage boundary or flip)")
	}
	if m := v.command; m != nil {
		row(w, "command", fmt.Sprintf("%s by %s at %s: %s (not yet taken by a runner)", m.Command, m.Who, m.At.UTC().Format(time.TimeOnly), oneLine(m.Why)))
	}
	if next := nextSteps(st); next != "" {
		row(w, "next", next)
	}
	fmt.Fprintln(w)
	row(w, "", "STAGE", "MOVES", "USERS", "TRIES", "FREEZE→FLIP EPOCH", "FROZEN→FLIP", "VERIFIED", "ROLLED BACK")
	for i, l := range st.Stages {
		ps := st.Plan.Stages[i]
		mark := ""
		if i == st.Stage && !st.Status.Terminal() {
			mark = ">"
		}
		epochs := "-"
		if l.FreezeEpoch != 0 || l.FlipEpoch != 0 {
			epochs = fmt.Sprintf("%s→%s", epochOrDash(l.FreezeEpoch), epochOrDash(l.FlipEpoch))
		}
		window := "-"
		if l.Window > 0 {
			window = seconds(l.Window)
		}
		verified := "no"
		switch {
		case !l.VerifiedAt.IsZero() && !l.Flipped && l.Attempts == 0:
			verified = "skipped (empty)"
		case !l.VerifiedAt.IsZero():
			verified = "yes"
		}
		row(w, mark, l.Name, stageAdds(ps), users(ps), l.Attempts, epochs, window, verified, yesNo(l.RolledBack))
	}
	for _, l := range st.Stages {
		if l.Warning != "" {
			fmt.Fprintf(w, "warning: stage %s: %s\n", l.Name, l.Warning)
		}
	}
	return nil
}

func epochOrDash(e uint64) string {
	if e == 0 {
		return "-"
	}
	return fmt.Sprint(e)
}

// nextSteps says what an operator can do with a cutover in its status.
func nextSteps(st *failover.State) string {
	id := st.ID
	switch st.Status {
	case failover.StatusWaiting, failover.StatusPaused:
		return fmt.Sprintf("cellctl cutover resume %[1]s  (runs stage %[2]s; or: cellctl cutover rollback %[1]s --reason WHY)", id, st.StageName())
	case failover.StatusFailed:
		return fmt.Sprintf("fix the cause, then: cellctl cutover resume %[1]s  (retries; or rollback / abort %[1]s --reason WHY)", id)
	case failover.StatusRunning:
		return fmt.Sprintf("runs in a cellctl; if that died, cellctl cutover resume %s takes over once its lock expires", id)
	case "":
		return fmt.Sprintf("never started: cellctl cutover resume %s starts it", id)
	}
	return ""
}

func (a *app) newCutoverListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the cutovers, newest first",
		Example: `  cellctl cutover list
  cellctl cutover list -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect()
			if err != nil {
				return err
			}
			defer s.Close()
			rec, err := a.records(s)
			if err != nil {
				return err
			}
			ctx, cancel := a.short()
			defer cancel()
			list, lerr := rec.List(ctx)
			if lerr != nil && len(list) == 0 && !errors.Is(lerr, etcdcutover.ErrCorruptRecord) {
				return a.etcdErr(lerr)
			}
			rows := cutoverList{}
			for _, st := range list {
				rows = append(rows, cutoverRow{
					ID: st.ID, Status: string(st.Status), Stage: st.Stage + 1, Stages: len(st.Plan.Stages), StageName: st.StageName(),
					Step: string(st.Step), Who: st.Who, Why: st.Why, Created: st.Created, Updated: st.Updated,
				})
			}
			if err := a.print(rows); err != nil {
				return err
			}
			// Corrupt records are named after the good ones.
			return a.etcdErr(lerr)
		},
	}
}

// cutoverRow is one cutover in a list.
type cutoverRow struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Stage     int       `json:"stage"`
	Stages    int       `json:"stages"`
	StageName string    `json:"stageName"`
	Step      string    `json:"step"`
	Who       string    `json:"who"`
	Why       string    `json:"why"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

type cutoverList []cutoverRow

func (l cutoverList) writeTable(w io.Writer) error {
	if len(l) == 0 {
		fmt.Fprintln(w, "no cutovers")
		return nil
	}
	row(w, "ID", "STATUS", "STAGE", "STEP", "WHO", "CREATED (UTC)", "WHY")
	for _, r := range l {
		row(w, r.ID, orDash(r.Status), fmt.Sprintf("%d/%d %s", r.Stage, r.Stages, r.StageName), orDash(r.Step), r.Who, r.Created.UTC().Format(time.DateTime), oneLine(r.Why))
	}
	return nil
}

// --- resume ---

func (a *app) newCutoverResumeCmd() *cobra.Command {
	var (
		rf       runFlags
		lockWait time.Duration
		auto     bool
	)
	cmd := &cobra.Command{
		Use:   "resume ID [--auto] [gate flags]",
		Short: "Continue a cutover: the next stage, a failed stage again, or the step its dead runner left",
		Long: `Continue a cutover in this process, showing progress as 'start' does: a waiting
or paused cutover runs its next stage; a failed one retries the stage (or the
rollback) that failed; a running one whose runner died continues from the
recorded step (every step is safe to repeat).

It takes the cutover lock, waiting up to --lock-wait for the lease of a runner
that died to expire. Give the gate and mover flags again: they are not stored
in the record. --auto makes the cutover go on through the remaining stages
without waiting (recorded from then on).`,
		Example: `  cellctl cutover resume cut-20261121-031502-9f3a
  cellctl cutover resume cut-20261121-031502-9f3a --auto --probe-url 'http://cellrouter:8080/probe/{key}'`,
		Args: exactArgs(1, "the cutover ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := checkCutoverID("cutover ID", id); err != nil {
				return err
			}
			if lockWait <= 0 {
				return usagef("--lock-wait %v: want a positive duration like 30s", lockWait)
			}
			if err := rf.check(); err != nil {
				return err
			}
			defer rf.close()
			s, rec, st, err := a.openRecord(id)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := endedErr(st, "resume"); err != nil {
				return err
			}
			ctl, err := a.lock(s, lockWait)
			if err != nil {
				return err
			}
			defer ctl.Close()
			// Read it again under the lock: the last runner may have moved it.
			if st, err = a.getRecord(s, rec, id); err != nil {
				return err
			}
			if err := endedErr(st, "resume"); err != nil {
				return err
			}
			if auto {
				st = st.Clone()
				st.Options.Auto = true
			}
			ev := failover.Event{Kind: failover.EvResume, At: time.Now(), Detail: a.actor}
			if a.reason != "" {
				ev.Detail += ": " + a.reason
			}
			if st.Status == "" {
				// Created, but its runner died before the first step.
				ev.Kind = failover.EvStart
			}
			if a.output == "table" {
				fmt.Fprintf(a.stdout, "resuming cutover %s (%s, stage %s, step %s); %s\n\n", id, orDash(string(st.Status)), stageOf(st), orDash(string(st.Step)), rf.describe())
			}
			final, runErr := a.runCutover(ctl, st, ev, &rf)
			return a.finish(s, final, runErr, goalForward)
		},
	}
	f := cmd.Flags()
	rf.register(f)
	f.DurationVar(&lockWait, "lock-wait", 30*time.Second, "how long to wait for the cutover lock (a dead runner's lease expires within 10s)")
	f.BoolVar(&auto, "auto", false, "from now on go on to the next stage when the gates pass, without waiting")
	return cmd
}

// endedErr refuses to act on a cutover that is done, aborted or rolled back.
func endedErr(st *failover.State, verb string) error {
	if !st.Status.Terminal() {
		return nil
	}
	return &hintError{
		fmt.Errorf("cutover %s is already %s (%s); nothing to %s: %w", st.ID, st.Status, orDash(oneLine(st.Reason)), verb, failover.ErrBadEvent),
		"start a new cutover with `cellctl cutover start`; a cutover back the other way undoes a finished one",
	}
}

// --- pause, abort, rollback ---

func (a *app) newCutoverCommandCmd(c failover.Command) *cobra.Command {
	var (
		rf   runFlags
		wait time.Duration
	)
	var short, long string
	switch c {
	case failover.CmdPause:
		short = "Stop a cutover at the end of its current stage"
		long = `Stop a cutover at the end of its current stage (status paused); 'resume'
continues it. A waiting cutover becomes paused at once.`
	case failover.CmdAbort:
		short = "Stop a cutover now: unfreeze what is frozen; stages already flipped stay"
		long = `Stop a cutover now (status aborted): slots frozen by the current stage are
unfrozen back to their source; stages already flipped stay where they are. A
flip already sent completes first. An aborted cutover cannot be resumed.`
	case failover.CmdRollback:
		short = "Move everything a cutover moved back to its source cells"
		long = `Move everything the cutover moved back to its source cells, with the same
protocol in reverse (freeze, barrier, data gate, flip, verify), ending in status
rolled-back. Slots frozen by the current stage are unfrozen first. Give the
gate flags that guard the reverse move. An emergency failover is not rolled
back this way (its source cells are fenced): see docs/runbooks/failover.md.`
	}
	long += `

If the cutover's runner is alive (it holds the lock), the command is sent to it
and this waits up to --wait for the record to show it was taken, printing each
change. If no runner holds the lock (the cutover is waiting, paused or failed,
or its runner died), this process takes the lock, does it and shows progress;
a cutover whose runner died mid-step has that step carried on first where the
command needs it (a pause finishes the stage; an abort lets a flip in flight
land). The gate and mover flags are used only then.`
	cmd := &cobra.Command{
		Use:     string(c) + " ID --reason WHY",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf(`  cellctl cutover %s cut-20261121-031502-9f3a --reason "error rate up in IDC-B"`, c),
		Args:    exactArgs(1, "the cutover ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := a.requireReason(); err != nil {
				return err
			}
			if err := checkCutoverID("cutover ID", id); err != nil {
				return err
			}
			if wait <= 0 {
				return usagef("--wait %v: want a positive duration like 60s", wait)
			}
			if err := rf.check(); err != nil {
				return err
			}
			defer rf.close()
			return a.command(id, c, wait, &rf)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 60*time.Second, "with a live runner: how long to wait for it to take the command")
	rf.register(cmd.Flags())
	return cmd
}

// openRecord connects and reads cutover id's record. The caller closes
// the session.
func (a *app) openRecord(id string) (*session, *etcdcutover.Records, *failover.State, error) {
	s, err := a.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	rec, err := a.records(s)
	if err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	st, err := a.getRecord(s, rec, id)
	if err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	return s, rec, st, nil
}

// errRefused is wrapped by refusals made for safety; they exit 8.
var errRefused = errors.New("refused")

// command carries out pause, abort or rollback of cutover id.
func (a *app) command(id string, c failover.Command, wait time.Duration, rf *runFlags) error {
	s, rec, st, err := a.openRecord(id)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := commandErr(st, c); err != nil {
		return err
	}
	ctl, err := a.lock(s, 0)
	if errors.Is(err, etcdcutover.ErrLocked) {
		return a.send(s, rec, st, c, wait, rf)
	}
	if err != nil {
		return err
	}
	defer ctl.Close()
	return a.commandHere(s, rec, ctl, id, c, rf, nil)
}

// commandErr refuses a command that cannot apply to st.
func commandErr(st *failover.State, c failover.Command) error {
	if c == failover.CmdRollback && st.Options.Emergency {
		return &hintError{
			fmt.Errorf("cutover %s is an emergency failover: rolling it back would route its users to the fenced cells it left: %w", st.ID, errRefused),
			"bring the lost IDC back with `cellctl cell set-state CELL active` and a planned `cellctl cutover start` back (docs/runbooks/failover.md)",
		}
	}
	if err := endedErr(st, string(c)); err != nil {
		return err
	}
	if st.Status == "" && c == failover.CmdPause {
		return &hintError{
			fmt.Errorf("cutover %s was created but never started; nothing to %s: %w", st.ID, c, failover.ErrBadEvent),
			fmt.Sprintf("`cellctl cutover resume %s` starts it; it can be stopped after that", st.ID),
		}
	}
	return nil
}

// commandHere runs the command in this process, which holds the lock. pending,
// if set, is this operator's command already stored for the runner that
// went away: it is taken here.
func (a *app) commandHere(s *session, rec *etcdcutover.Records, ctl *etcdcutover.Control, id string, c failover.Command, rf *runFlags, pending *failover.CommandMsg) error {
	st, err := a.getRecord(s, rec, id)
	if err != nil {
		return err
	}
	g := map[failover.Command]goal{failover.CmdPause: goalPause, failover.CmdAbort: goalAbort, failover.CmdRollback: goalRollback}[c]
	if pending != nil && reflects(st, c) && (c == failover.CmdPause || st.Status != failover.StatusRunning) {
		// Its runner took the command just before it went away.
		return a.finish(s, st, nil, g)
	}
	if pending != nil {
		// This operator's command, stored for a runner that went away:
		// taken here, so no later runner acts on it again.
		ctx, cancel := a.short()
		err := ctl.Consumed(ctx, id, *pending)
		cancel()
		if err != nil {
			return a.etcdErr(err)
		}
	}
	if err := commandErr(st, c); err != nil {
		return err
	}
	kind := map[failover.Command]failover.EventKind{failover.CmdPause: failover.EvPause, failover.CmdAbort: failover.EvAbort, failover.CmdRollback: failover.EvRollback}[c]
	if a.output == "table" {
		fmt.Fprintf(a.stdout, "no runner holds cutover %s's lock: doing the %s here (%s, stage %s, step %s)\n\n", id, c, st.Status, stageOf(st), st.Step)
	}
	// A runner started with the request carries the recorded step on: a
	// pause of a running cutover whose runner died finishes the stage, an
	// abort during a flip lets the flip land first.
	ev := failover.Event{Kind: kind, At: time.Now(), Detail: a.actor + ": " + a.reason}
	final, runErr := a.runCutover(ctl, st, ev, rf)
	return a.finish(s, final, runErr, g)
}

// reflects reports whether st shows command c taken.
func reflects(st *failover.State, c failover.Command) bool {
	switch c {
	case failover.CmdPause:
		return st.Pending == failover.CmdPause || st.Status != failover.StatusRunning
	case failover.CmdAbort:
		return st.Status == failover.StatusAborted || st.After == failover.StatusAborted || st.Pending == failover.CmdAbort
	case failover.CmdRollback:
		return st.Status == failover.StatusRolledBack || st.Rollback != nil || st.After == failover.StatusRolledBack || st.Pending == failover.CmdRollback
	}
	return false
}

// send stores the command for the live runner of st and follows the record
// until the runner took it and the record shows it, printing each change.
// If the runner goes away first (the cutover held, or the runner died),
// this process takes the lock and does the command itself.
func (a *app) send(s *session, rec *etcdcutover.Records, st *failover.State, c failover.Command, wait time.Duration, rf *runFlags) error {
	id := st.ID
	msg := failover.CommandMsg{Command: c, Who: a.actor, Why: a.reason, At: time.Now().UTC()}
	ctx, cancel := a.short()
	err := rec.Send(ctx, id, msg)
	cancel()
	if err != nil {
		return a.etcdErr(err)
	}
	if a.output == "table" {
		fmt.Fprintf(a.stdout, "sent %s to the runner of cutover %s; waiting up to %v for it to act\n", c, id, wait)
	}
	wctx, wcancel := context.WithTimeout(a.ctx, wait)
	defer wcancel()
	states := rec.Follow(wctx, id)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last *failover.State
	taken := false // the stored command is gone (or replaced)
	var takenAt time.Time
	lastTry := time.Time{}
	for {
		select {
		case next, ok := <-states:
			if !ok {
				states = nil
				continue
			}
			if last == nil || next.Status != last.Status || next.Step != last.Step || next.Stage != last.Stage || next.Pending != last.Pending || (next.Rollback == nil) != (last.Rollback == nil) {
				a.printChange(next)
			}
			last = next
		case <-tick.C:
		case <-wctx.Done():
			if a.ctx.Err() != nil {
				return &hintError{fmt.Errorf("stopped waiting for the runner of cutover %s: %w", id, errInterrupted),
					fmt.Sprintf("the %s stays stored for its runner; `cellctl cutover status %s` shows whether it was taken", c, id)}
			}
			if taken && last != nil && reflects(last, c) {
				// Taken, and still being carried out (a rollback's stages).
				if a.output == "table" {
					fmt.Fprintf(a.stdout, "the runner is carrying out the %s; follow it with `cellctl cutover status --watch %s`\n", c, id)
				}
				return nil
			}
			return &hintError{
				fmt.Errorf("the runner of cutover %s did not take the %s within %v (--wait): %w", id, c, wait, errNotFinished),
				fmt.Sprintf("the command stays stored and its runner takes it at its next wait; `cellctl cutover status %s` shows it", id),
			}
		}
		if !taken {
			ctx, cancel := a.short()
			p, err := rec.Pending(ctx, id)
			cancel()
			if err == nil && (p == nil || p.Command != msg.Command || p.Who != msg.Who || !p.At.Equal(msg.At)) {
				taken, takenAt = true, time.Now()
			} else if err == nil && time.Since(lastTry) >= time.Second {
				// Not taken yet: is anyone still running it?
				lastTry = time.Now()
				if ctl, lerr := a.tryLockQuiet(s); lerr == nil {
					defer ctl.Close()
					return a.commandHere(s, rec, ctl, id, c, rf, p)
				}
			}
		}
		if taken && last != nil {
			done := reflects(last, c)
			if done && (c == failover.CmdPause || last.Status != failover.StatusRunning) {
				if a.output == "table" {
					fmt.Fprintln(a.stdout)
					printResult(a.stdout, "table", statusView{st: last})
				}
				return nil
			}
			if !done && time.Since(takenAt) > 2*time.Second {
				// The runner saves the record before it deletes the command:
				// taken but not shown means it ignored the command.
				ctx, cancel := a.short()
				cur, _, err := rec.Get(ctx, id)
				cancel()
				if err == nil && !reflects(cur, c) {
					return &hintError{
						fmt.Errorf("the runner of cutover %s took the %s but did not act on it: it does not apply to a cutover that is %s at step %s: %w", id, c, cur.Status, cur.Step, failover.ErrBadEvent),
						"the runner's output says why; `cellctl cutover status " + id + "` shows the record",
					}
				}
				if err == nil {
					last = cur
				}
			}
		}
	}
}

// tryLockQuiet takes the lock if it is free, reporting nothing.
func (a *app) tryLockQuiet(s *session) (*etcdcutover.Control, error) {
	ctx, cancel := a.short()
	defer cancel()
	return etcdcutover.TryAcquire(ctx, s.cli, a.lockConfig())
}
