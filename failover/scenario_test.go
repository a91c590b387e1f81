package failover_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/clock/clocktest"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/router"
)

// -update is what the issue asks for; -rewrite is the name the router's
// golden files use (STYLE.md rule 11). Either rewrites the goldens.
var (
	update  = flag.Bool("update", false, "rewrite testdata/scenarios/*.golden instead of comparing")
	rewrite = flag.Bool("rewrite", false, "same as -update")
)

// TestScenarios runs every testdata/scenarios/*.txt through Step and
// compares the transcript with <name>.golden.
//
// A scenario is line-oriented; '#' starts a comment. Commands:
//
//	plan [stages=whitelist,1/256,1] [from=IDC-A] [to=IDC-B] [whitelist=true]
//	     [auto=false] [emergency=false] [drain=false] [barrier=30s] [data=60s] [bake=10s]
//	    Plans a cutover "c1" on the fixed table (1024 slots: a1 0-255, a2
//	    256-511 in IDC-A; b1 512-767, b2 768-1023 in IDC-B; key u42
//	    whitelisted to a1 unless whitelist=false; epoch 1). A file may plan
//	    several cutovers one after the other; each starts at time 0.
//	event KIND [epoch=N] [detail="..."] [+2s]
//	    Feeds one event. The fake clock advances 100ms first, or by the
//	    +duration given. "event applied" also performs the map edit in
//	    flight on the map (and fails the test if the map refuses it);
//	    "event apply" performs it and feeds applied or, when the map
//	    refuses it, apply-failed with the refusal. An omitted epoch is the
//	    map's epoch plus one (unchanged when the edit changes nothing).
//	expect-error
//	    The previous event must have been refused with ErrBadEvent, leaving
//	    the state as it was. A refusal without it fails the test.
//	map apply | fix | assign slots=A[-B] cell=X | freeze slots=A[-B] cutover=X | unfreeze slots=A[-B]
//	    Edits the map without an event: "apply" performs the edit in flight
//	    as a runner that dies right after its compare-and-swap would; "fix"
//	    is an operator unfreezing by hand what the cutover left frozen; the
//	    rest are hand edits by someone else.
//
// After every event the harness checks in code (see invariants) that the map
// is valid; that a held or ended cutover has nothing frozen and no pending
// command; that owners agree with the stage log (flipped and not rolled
// back: at the targets, else at the sources); that a done cutover moved
// every planned slot (and a drain left its sources offline); that a full
// rollback restored the original owners; and that a running barrier, data
// gate or flip has its movement frozen, a running verify its movement
// flipped. A violation fails the test and is also written to the
// transcript. Step must also never modify the state it is given.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "scenarios", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/scenarios")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got := runScenario(t, string(src))
			golden := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update || *rewrite {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("transcript differs from %s (run with -update to rewrite it):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

const cutoverID = "c1"

var scenarioStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type scenario struct {
	t    *testing.T
	out  bytes.Buffer
	clk  *clocktest.Clock
	orig *router.Table // the planned table, sealed
	tab  *router.Table // the map, mutable
	s    *failover.State

	// inflight are the actions the runner is performing: the last ones
	// Step returned, kept while the cutover runs and Step returns none
	// (an operator request during a map edit in flight).
	inflight []failover.Action
	// refused is the last event's refusal, until an expect-error takes it.
	refused error
	// unfreezeRefused: the map refused an unfreeze, so the cutover holds
	// with slots frozen until "map fix"; the held-and-frozen check is off.
	unfreezeRefused bool
	// handEdited: someone edited the map by hand; the ownership checks
	// are off for the rest of the scenario.
	handEdited bool
	// ahead: a map edit landed that the record does not know of yet (map
	// apply); the running-step checks are off until the next edit the
	// record takes.
	ahead bool
}

func runScenario(t *testing.T, src string) string {
	t.Helper()
	sc := &scenario{t: t, clk: clocktest.New(scenarioStart)}
	var comments []string // held so that a cutover's end comes before the next one's comments
	for n, raw := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			comments = append(comments, line)
			continue
		}
		args, err := tokenize(line)
		if err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if args[0] != "expect-error" && sc.refused != nil {
			t.Errorf("line %d: the previous event was refused without expect-error: %v", n+1, sc.refused)
			sc.refused = nil
		}
		if args[0] == "plan" && sc.s != nil {
			sc.printStages()
		}
		for _, c := range comments {
			fmt.Fprintln(&sc.out, c)
		}
		comments = nil
		fmt.Fprintln(&sc.out, line)
		switch args[0] {
		case "plan":
			sc.plan(n+1, args[1:])
		case "event":
			sc.event(n+1, args[1:])
		case "expect-error":
			sc.expectError(n + 1)
		case "map":
			sc.mapEdit(n+1, args[1:])
		default:
			t.Fatalf("line %d: unknown command %q", n+1, args[0])
		}
	}
	if sc.refused != nil {
		t.Errorf("the last event was refused without expect-error: %v", sc.refused)
	}
	if sc.s != nil {
		sc.printStages()
	}
	for _, c := range comments {
		fmt.Fprintln(&sc.out, c)
	}
	return sc.out.String()
}

// tokenize splits a line into words, keeping key="quoted value" together
// (unquoted) and dropping a trailing # comment.
func tokenize(line string) ([]string, error) {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		if line[0] == '#' {
			break
		}
		end := strings.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		word := line[:end]
		if k, v, ok := strings.Cut(word, "="); ok && strings.HasPrefix(v, `"`) {
			q := len(k) + 1
			i := q + 1
			for ; i < len(line); i++ {
				if line[i] == '\\' {
					i++
					continue
				}
				if line[i] == '"' {
					break
				}
			}
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated quote in %q", line)
			}
			s, err := strconv.Unquote(line[q : i+1])
			if err != nil {
				return nil, err
			}
			word, end = k+"="+s, i+1
		}
		out = append(out, word)
		line = line[end:]
	}
	if len(out) == 0 {
		return nil, errors.New("empty line")
	}
	return out, nil
}

// baseTable is the fixed map scenarios plan on.
func baseTable(t *testing.T, whitelist bool) *router.Table {
	t.Helper()
	tb, err := router.NewTable(1024)
	must(t, err)
	for i, c := range []router.Cell{{ID: "a1", IDC: "IDC-A"}, {ID: "a2", IDC: "IDC-A"}, {ID: "b1", IDC: "IDC-B"}, {ID: "b2", IDC: "IDC-B"}} {
		must(t, tb.AddCell(c))
		must(t, tb.Assign(router.SlotRange{First: i * 256, Last: i*256 + 255}, c.ID))
	}
	if whitelist {
		must(t, tb.SetWhitelist("u42", "a1"))
	}
	tb.SetEpoch(1)
	must(t, tb.Validate())
	return tb.Seal()
}

func endpoints(list string) failover.Endpoints {
	var e failover.Endpoints
	for _, x := range strings.Split(list, ",") {
		if strings.HasPrefix(x, "IDC-") {
			e.IDCs = append(e.IDCs, x)
		} else {
			e.Cells = append(e.Cells, x)
		}
	}
	return e
}

func (sc *scenario) plan(line int, args []string) {
	t := sc.t
	kv := map[string]string{"from": "IDC-A", "to": "IDC-B", "whitelist": "true"}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			t.Fatalf("line %d: plan wants key=value, got %q", line, a)
		}
		kv[k] = v
	}
	req := failover.Request{From: endpoints(kv["from"]), To: endpoints(kv["to"])}
	if st, ok := kv["stages"]; ok {
		stages, err := failover.ParseStages(st)
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		req.Stages = stages
	}
	var o failover.Options
	for k, v := range kv {
		var err error
		switch k {
		case "from", "to", "stages", "whitelist":
		case "auto":
			o.Auto, err = strconv.ParseBool(v)
		case "emergency":
			o.Emergency, err = strconv.ParseBool(v)
		case "drain":
			o.Drain, err = strconv.ParseBool(v)
		case "barrier":
			o.BarrierTimeout, err = time.ParseDuration(v)
		case "data":
			o.DataTimeout, err = time.ParseDuration(v)
		case "bake":
			o.Bake, err = time.ParseDuration(v)
		default:
			err = fmt.Errorf("unknown plan option")
		}
		if err != nil {
			t.Fatalf("line %d: plan %s=%s: %v", line, k, v, err)
		}
	}
	sc.clk = clocktest.New(scenarioStart)
	sc.inflight, sc.unfreezeRefused, sc.handEdited, sc.ahead = nil, false, false, false
	sc.orig = baseTable(t, kv["whitelist"] == "true")
	p, err := failover.NewPlan(sc.orig, req)
	if err != nil {
		t.Fatalf("line %d: %v", line, err)
	}
	sc.tab = sc.orig.Clone()
	sc.s = failover.NewState(cutoverID, "alice", "scenario", p, o, sc.clk.Now())
	var names []string
	for _, st := range p.Stages {
		m := st.Movement()
		names = append(names, fmt.Sprintf("%s(%d slots, %d keys)", st.Name, m.SlotCount(), len(m.Keys)))
	}
	fmt.Fprintf(&sc.out, "  plan: %s -> %s, %d slots moving; stages %s\n", strings.Join(p.From, ","), strings.Join(p.To, ","), p.Moving, strings.Join(names, " "))
	fmt.Fprintf(&sc.out, "  %s\n", mapSummary(sc.tab))
}

// inflightChange is the map edit in flight, if any.
func (sc *scenario) inflightChange() *failover.Change {
	for _, a := range sc.inflight {
		if a.Kind == failover.ActApplyMap {
			return a.Change
		}
	}
	return nil
}

// staged performs c on a copy of the map (a compare-and-swap: all or
// nothing) and returns the copy at epoch. Epoch 0 means the next epoch, or
// the current one when c changes nothing (a store does not bump the epoch
// of a map it does not change).
func (sc *scenario) staged(c *failover.Change, epoch uint64) (*router.Table, error) {
	n := sc.tab.Clone()
	if err := c.Apply(n); err != nil {
		return nil, err
	}
	if epoch == 0 {
		epoch = sc.tab.Epoch() + 1
		if router.Compare(sc.tab, n).Empty() {
			epoch = sc.tab.Epoch()
		}
	}
	n.SetEpoch(epoch)
	return n, nil
}

func (sc *scenario) event(line int, args []string) {
	t := sc.t
	if sc.s == nil {
		t.Fatalf("line %d: event before plan", line)
	}
	if len(args) == 0 {
		t.Fatalf("line %d: event wants a kind", line)
	}
	advance := 100 * time.Millisecond
	ev := failover.Event{Kind: failover.EventKind(args[0])}
	for _, a := range args[1:] {
		var err error
		switch k, v, _ := strings.Cut(a, "="); {
		case strings.HasPrefix(a, "+"):
			advance, err = time.ParseDuration(a[1:])
		case k == "epoch":
			ev.Epoch, err = strconv.ParseUint(v, 10, 64)
		case k == "detail":
			ev.Detail = v
		default:
			err = errors.New("unknown argument")
		}
		if err != nil {
			t.Fatalf("line %d: %q: %v", line, a, err)
		}
	}
	sc.clk.Advance(advance)
	ev.At = sc.clk.Now()

	change := sc.inflightChange()
	var next *router.Table
	switch ev.Kind {
	case "apply":
		if change == nil {
			t.Fatalf("line %d: event apply with no map edit in flight", line)
		}
		var err error
		if next, err = sc.staged(change, ev.Epoch); err != nil {
			ev.Kind, ev.Epoch, ev.Detail = failover.EvApplyFailed, 0, err.Error()
		} else {
			ev.Kind, ev.Epoch = failover.EvApplied, next.Epoch()
		}
	case failover.EvApplied:
		if change != nil {
			staged, err := sc.staged(change, ev.Epoch)
			if err != nil {
				t.Errorf("line %d: the scenario says %s applied, but the map refuses it: %v", line, change.Op, err)
			} else {
				next, ev.Epoch = staged, staged.Epoch()
			}
		}
	}
	fmt.Fprintf(&sc.out, "  @%s %s", ev.At.Sub(scenarioStart), ev.Kind)
	if ev.Epoch != 0 {
		fmt.Fprintf(&sc.out, " epoch=%d", ev.Epoch)
	}
	if ev.Detail != "" {
		fmt.Fprintf(&sc.out, " detail=%q", ev.Detail)
	}
	fmt.Fprintln(&sc.out)

	before := snapshot(t, sc.s)
	n, acts, err := failover.Step(sc.s, ev)
	if after := snapshot(t, sc.s); after != before {
		t.Errorf("line %d: Step changed the state it was given", line)
	}
	if err != nil {
		fmt.Fprintf(&sc.out, "  refused: %v\n", err)
		if n != sc.s {
			t.Errorf("line %d: a refused event returned a new state", line)
		}
		if len(acts) != 0 {
			t.Errorf("line %d: a refused event returned actions %v", line, acts)
		}
		sc.refused = err
		return
	}
	if ev.Kind == failover.EvApplied && change == nil {
		t.Errorf("line %d: Step took applied with no map edit in flight", line)
	}
	prev := sc.inflight
	sc.s = n
	switch {
	case len(acts) > 0:
		sc.inflight = acts
	case n.Status != failover.StatusRunning:
		sc.inflight = nil
	case ev.Kind == failover.EvApplied || ev.Kind == failover.EvApplyFailed:
		// The edit in flight answered; nothing replaces it.
		t.Errorf("line %d: running after %s with nothing to do", line, ev.Kind)
		sc.inflight = nil
	}
	sc.printState()
	same := len(acts) > 0 && reflect.DeepEqual(acts, prev)
	for _, a := range acts {
		fmt.Fprintf(&sc.out, "  do %s", formatAction(a))
		if same {
			fmt.Fprint(&sc.out, " (again)")
		}
		fmt.Fprintln(&sc.out)
	}
	if len(acts) == 0 && n.Status == failover.StatusRunning {
		fmt.Fprintf(&sc.out, "  (in flight: %s)\n", formatActions(sc.inflight))
	}
	if next != nil && ev.Kind == failover.EvApplied {
		sc.setMap(next)
		sc.ahead = false
		switch change.Op {
		case failover.OpUnfreeze, failover.OpFlip:
			sc.unfreezeRefused = false
		}
	}
	if ev.Kind == failover.EvApplyFailed && change != nil && change.Op == failover.OpUnfreeze {
		sc.unfreezeRefused = true
	}
	sc.check(line)
}

func (sc *scenario) setMap(next *router.Table) {
	d := router.Compare(sc.tab, next)
	sc.tab = next
	if d.Empty() {
		fmt.Fprintf(&sc.out, "  %s (no change)\n", mapSummary(sc.tab))
		return
	}
	fmt.Fprintf(&sc.out, "  %s\n", mapSummary(sc.tab))
}

func (sc *scenario) expectError(line int) {
	if sc.refused == nil {
		sc.t.Errorf("line %d: expect-error, but the previous event was taken", line)
		return
	}
	if !errors.Is(sc.refused, failover.ErrBadEvent) {
		sc.t.Errorf("line %d: refusal %v does not wrap ErrBadEvent", line, sc.refused)
	}
	sc.refused = nil
}

func (sc *scenario) mapEdit(line int, args []string) {
	t := sc.t
	if sc.s == nil || len(args) == 0 {
		t.Fatalf("line %d: map wants a plan first and an edit", line)
	}
	kv := map[string]string{}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		kv[k] = v
	}
	var r router.SlotRange
	if s, ok := kv["slots"]; ok {
		rs, err := router.ParseSlotRanges(s, sc.tab.SlotCount())
		if err != nil || len(rs) != 1 {
			t.Fatalf("line %d: slots=%s: want one range (%v)", line, s, err)
		}
		r = rs[0]
	}
	next := sc.tab.Clone()
	var err error
	switch args[0] {
	case "apply":
		c := sc.inflightChange()
		if c == nil {
			t.Fatalf("line %d: map apply with no map edit in flight", line)
		}
		next, err = sc.staged(c, 0)
		if err != nil {
			t.Fatalf("line %d: map apply: %v", line, err)
		}
		sc.setMap(next)
		sc.ahead = true
		return
	case "fix":
		for _, f := range next.FrozenRanges() {
			if f.Cutover == cutoverID {
				must(t, next.Unfreeze(f.SlotRange))
			}
		}
		for _, k := range next.FrozenKeys() {
			if k.Cutover == cutoverID {
				next.UnfreezeKey(k.Key)
			}
		}
		sc.unfreezeRefused = false
	case "assign":
		err = next.Assign(r, kv["cell"])
		sc.handEdited = true
	case "freeze":
		err = next.Freeze(r, kv["cutover"])
		sc.handEdited = true
	case "unfreeze":
		err = next.Unfreeze(r)
		sc.handEdited = true
	default:
		t.Fatalf("line %d: unknown map edit %q", line, args[0])
	}
	if err != nil {
		t.Fatalf("line %d: %v", line, err)
	}
	next.SetEpoch(sc.tab.Epoch() + 1)
	sc.setMap(next)
}

func snapshot(t *testing.T, s *failover.State) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (sc *scenario) printState() {
	s := sc.s
	fmt.Fprintf(&sc.out, "  state: %s %s stage %d %q epoch=%d", s.Status, s.Step, s.Stage, s.StageName(), s.Epoch)
	if s.Pending != failover.CmdNone {
		fmt.Fprintf(&sc.out, " pending=%s", s.Pending)
	}
	if s.After != "" {
		fmt.Fprintf(&sc.out, " after=%s", s.After)
	}
	fmt.Fprintln(&sc.out)
	if s.Reason != "" {
		fmt.Fprintf(&sc.out, "  reason: %s\n", s.Reason)
	}
}

func (sc *scenario) printStages() {
	s := sc.s
	fmt.Fprintf(&sc.out, "end: %s %s, reason %q\n", s.Status, s.Step, s.Reason)
	fmt.Fprintln(&sc.out, "stages:")
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Sub(scenarioStart).String()
	}
	for _, l := range s.Stages {
		fmt.Fprintf(&sc.out, "  %-9s attempts=%d freeze=%d@%s flip=%d@%s window=%s verified@%s", l.Name, l.Attempts, l.FreezeEpoch, at(l.FrozenAt), l.FlipEpoch, at(l.FlippedAt), l.Window, at(l.VerifiedAt))
		if l.Flipped {
			fmt.Fprint(&sc.out, " flipped")
		}
		if l.RolledBack {
			fmt.Fprint(&sc.out, " rolled-back")
		}
		fmt.Fprintln(&sc.out)
	}
	fmt.Fprintf(&sc.out, "  %s\n", mapSummary(sc.tab))
}

func formatActions(acts []failover.Action) string {
	var out []string
	for _, a := range acts {
		out = append(out, formatAction(a))
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, "; ")
}

func formatAction(a failover.Action) string {
	var b strings.Builder
	b.WriteString(string(a.Kind))
	if a.Change != nil {
		fmt.Fprintf(&b, " %s %s", a.Change.Op, formatMove(a.Change.Move))
		if a.Change.Cutover != cutoverID {
			fmt.Fprintf(&b, " cutover=%s", a.Change.Cutover)
		}
		if len(a.Change.States) > 0 {
			var st []string
			for c, s := range a.Change.States {
				st = append(st, c+"="+string(s))
			}
			slices.Sort(st)
			fmt.Fprintf(&b, " states=%s", strings.Join(st, ","))
		}
	}
	if a.Move != nil {
		fmt.Fprintf(&b, " %s", formatMove(*a.Move))
	}
	if a.Epoch != 0 {
		fmt.Fprintf(&b, " epoch=%d", a.Epoch)
	}
	if a.Timeout != 0 {
		fmt.Fprintf(&b, " timeout=%s", a.Timeout)
	}
	return b.String()
}

// formatMove is a movement as slot counts per source>target pair and its
// keys: "slots=4(a1>b1:2,a2>b2:2) keys=u42(a1>b2)".
func formatMove(m failover.Movement) string {
	count := map[string]int{}
	for _, s := range m.Slots {
		count[s.From+">"+s.To] += s.Len()
	}
	var pairs []string
	for p, n := range count {
		pairs = append(pairs, fmt.Sprintf("%s:%d", p, n))
	}
	slices.Sort(pairs)
	out := fmt.Sprintf("slots=%d", m.SlotCount())
	if len(pairs) > 0 {
		out += "(" + strings.Join(pairs, ",") + ")"
	}
	var keys []string
	for _, k := range m.Keys {
		keys = append(keys, fmt.Sprintf("%s(%s>%s)", k.Key, k.From, k.To))
	}
	if len(keys) == 0 {
		return out + " keys=-"
	}
	return out + " keys=" + strings.Join(keys, ",")
}

// mapSummary: owner counts per cell, frozen slots and keys, whitelist and
// cells that are not active.
func mapSummary(tb *router.Table) string {
	var owners, states []string
	for _, c := range tb.Cells() {
		owners = append(owners, fmt.Sprintf("%s=%d", c.ID, len(tb.SlotsOf(c.ID))))
		if c.State != router.StateActive {
			states = append(states, fmt.Sprintf("%s=%s", c.ID, c.State))
		}
	}
	frozen := map[string]int{}
	for _, f := range tb.FrozenRanges() {
		frozen[f.Cutover] += f.Len()
	}
	var fz []string
	for c, n := range frozen {
		fz = append(fz, fmt.Sprintf("%d by %s", n, c))
	}
	slices.Sort(fz)
	var fk, wl []string
	for _, k := range tb.FrozenKeys() {
		fk = append(fk, k.Key+" by "+k.Cutover)
	}
	for _, w := range tb.Whitelist() {
		wl = append(wl, w.Key+"="+w.Cell)
	}
	orDash := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ",")
	}
	out := fmt.Sprintf("map@%d owners %s; frozen %s; frozen keys %s; whitelist %s", tb.Epoch(), strings.Join(owners, " "), orDash(fz), orDash(fk), orDash(wl))
	if len(states) > 0 {
		out += "; cells " + strings.Join(states, ",")
	}
	return out
}

func (sc *scenario) check(line int) {
	for _, p := range invariants(sc.s, sc.orig, sc.tab, !sc.unfreezeRefused, !sc.handEdited, !sc.ahead) {
		sc.t.Errorf("line %d: invariant: %s", line, p)
		fmt.Fprintf(&sc.out, "  INVARIANT BROKEN: %s\n", p)
	}
}

// invariants returns what is wrong with map tb for a cutover in state s
// planned on orig. held checks that a held or ended cutover has nothing
// frozen (off while an unfreeze was refused: the cutover says to check the
// map by hand); owners checks ownership against the stage log (off after
// hand edits); steps checks that a running step's slots are as the step
// expects (off while the map is ahead of the record).
func invariants(s *failover.State, orig, tb *router.Table, held, owners, steps bool) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if err := tb.Validate(); err != nil {
		add("the map is invalid: %v", err)
	}
	p := s.Plan
	stopped := s.Status != failover.StatusRunning && s.Status != ""
	if stopped && (s.Pending != failover.CmdNone || s.After != "") {
		add("%s with pending %q and after %q left over", s.Status, s.Pending, s.After)
	}
	if stopped && held {
		for _, f := range tb.FrozenRanges() {
			if f.Cutover == s.ID {
				add("%s but slots %s are frozen by it", s.Status, f.SlotRange)
			}
		}
		for _, k := range tb.FrozenKeys() {
			if k.Cutover == s.ID {
				add("%s but key %q is frozen by it", s.Status, k.Key)
			}
		}
	}
	if !owners {
		return probs
	}
	// Slot by slot, key by key, the map agrees with the stage log: a
	// stage flipped and not rolled back is at its targets, any other at
	// its sources.
	if stopped {
		for i, st := range p.Stages {
			forward := s.Stages[i].Flipped && !s.Stages[i].RolledBack
			for _, m := range st.Moves {
				want := m.From
				if forward {
					want = m.To
				}
				for sl := m.First; sl <= m.Last; sl++ {
					if got := tb.SlotOwner(sl); got != want {
						add("%s: stage %s slot %d owned by %s, want %s (flipped %v, rolled back %v)", s.Status, st.Name, sl, got, want, s.Stages[i].Flipped, s.Stages[i].RolledBack)
						break
					}
				}
			}
			for _, k := range st.Keys {
				want := k.From
				if forward {
					want = k.To
				}
				if got := tb.Owner(k.Key); got == nil || got.ID != want {
					add("%s: stage %s key %q served by %v, want %s", s.Status, st.Name, k.Key, got, want)
				}
			}
		}
	}
	switch s.Status {
	case failover.StatusDone:
		for i, l := range s.Stages {
			if !p.Stages[i].Movement().Empty() && !l.Flipped {
				add("done but stage %s never flipped", l.Name)
			}
		}
		if s.Options.Drain {
			for _, c := range p.From {
				if cell, _ := tb.Cell(c); cell.State != router.StateOffline {
					add("done draining but cell %s is %s", c, cell.State)
				}
			}
		}
		if moved := router.Compare(orig, tb).MovedSlots(); moved != p.Moving {
			add("done but %d slots moved, the plan moves %d", moved, p.Moving)
		}
		for sl := range orig.SlotCount() {
			if slices.Contains(p.From, orig.SlotOwner(sl)) && !slices.Contains(p.To, tb.SlotOwner(sl)) {
				add("done but slot %d is owned by %s, not a target", sl, tb.SlotOwner(sl))
				break
			}
		}
	case failover.StatusRolledBack:
		full := true
		for _, l := range s.Stages {
			full = full && (!l.Flipped || l.RolledBack)
		}
		if !full {
			break
		}
		d := router.Compare(orig, tb)
		if len(d.Moved) > 0 || len(d.WhitelistChanged)+len(d.WhitelistRemoved) > 0 {
			add("rolled back in full but the map differs from the original: %s", strings.Join(d.Lines(), "; "))
		}
	case failover.StatusRunning:
		if !steps {
			break
		}
		m := s.Movement()
		switch s.Step {
		case failover.StepBarrier, failover.StepData, failover.StepFlip:
			for _, r := range m.Slots {
				for sl := r.First; sl <= r.Last; sl++ {
					if by, ok := tb.SlotFrozen(sl); !ok || by != s.ID || tb.SlotOwner(sl) != r.From {
						add("at %s slot %d is owned by %s, frozen %v by %q; want %s, frozen by %s", s.Step, sl, tb.SlotOwner(sl), ok, by, r.From, s.ID)
						break
					}
				}
			}
			frozen := map[string]string{}
			for _, k := range tb.FrozenKeys() {
				frozen[k.Key] = k.Cutover
			}
			for _, k := range m.Keys {
				if frozen[k.Key] != s.ID {
					add("at %s key %q is not frozen by %s", s.Step, k.Key, s.ID)
				}
			}
		case failover.StepVerify:
			for _, r := range m.Slots {
				for sl := r.First; sl <= r.Last; sl++ {
					if _, ok := tb.SlotFrozen(sl); ok || tb.SlotOwner(sl) != r.To {
						add("at verify slot %d is owned by %s (frozen %v), want %s unfrozen", sl, tb.SlotOwner(sl), ok, r.To)
						break
					}
				}
			}
		}
	}
	return probs
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

// The invariant checks catch what they are meant to: each broken map
// below must be reported.
func TestScenarioInvariantsCatch(t *testing.T) {
	orig := baseTable(t, true)
	p, err := failover.NewPlan(orig, failover.Request{From: endpoints("IDC-A"), To: endpoints("IDC-B"), Stages: mustStages(t, "whitelist,1/256,1")})
	must(t, err)
	state := func(st failover.Status, step failover.StepName, flipped ...int) *failover.State {
		s := failover.NewState(cutoverID, "alice", "test", p, failover.Options{}, scenarioStart)
		s.Status, s.Step = st, step
		for _, i := range flipped {
			s.Stages[i].Flipped = true
		}
		return s
	}
	// forward returns orig with stages 0..n-1 flipped (and stage n frozen if frozen).
	forward := func(n int, frozen bool) *router.Table {
		tb := orig.Clone()
		for _, st := range p.Stages[:n] {
			for _, m := range st.Moves {
				must(t, tb.Assign(m.SlotRange, m.To))
			}
			for _, k := range st.Keys {
				must(t, tb.SetWhitelist(k.Key, k.To))
			}
		}
		if frozen {
			for _, m := range p.Stages[n].Moves {
				must(t, tb.Freeze(m.SlotRange, cutoverID))
			}
		}
		return tb
	}
	for _, tc := range []struct {
		name string
		s    *failover.State
		tb   *router.Table
		want string
	}{
		{"failed with slots frozen", state(failover.StatusFailed, failover.StepHold, 0), forward(1, true), "failed but slots"},
		{"aborted with a key frozen", state(failover.StatusAborted, failover.StepEnd), func() *router.Table {
			tb := orig.Clone()
			must(t, tb.FreezeKey("u42", cutoverID))
			return tb
		}(), `aborted but key "u42" is frozen`},
		{"done but a stage not moved", state(failover.StatusDone, failover.StepEnd, 0, 1, 2), forward(2, false), "done but"},
		{"full rollback but slots still moved", state(failover.StatusRolledBack, failover.StepEnd), forward(2, false), "want a"},
		{"stage log says flipped, map says not", state(failover.StatusWaiting, failover.StepHold, 0, 1), forward(1, false), "want b"},
		{"barrier with nothing frozen", func() *failover.State {
			s := state(failover.StatusRunning, failover.StepBarrier, 0)
			s.Stage = 1
			return s
		}(), forward(1, false), "at barrier slot"},
		{"failed with a pause left over", func() *failover.State {
			s := state(failover.StatusFailed, failover.StepHold)
			s.Pending = failover.CmdPause
			return s
		}(), orig, `pending "pause"`},
		{"done draining, source not offline", func() *failover.State {
			s := state(failover.StatusDone, failover.StepEnd, 0, 1, 2)
			s.Options.Drain = true
			return s
		}(), forward(3, false), "cell a1 is active"},
		{"invalid map", state(failover.StatusWaiting, failover.StepHold), func() *router.Table {
			tb := orig.Clone()
			must(t, tb.SetCellState("a1", router.StateOffline))
			return tb
		}(), "the map is invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probs := invariants(tc.s, orig, tc.tb, true, true, true)
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Fatalf("invariants = %q, want one mentioning %q", probs, tc.want)
			}
		})
	}
	// And a consistent map passes.
	if probs := invariants(state(failover.StatusWaiting, failover.StepHold, 0, 1), orig, forward(2, false), true, true, true); len(probs) > 0 {
		t.Fatalf("consistent map reported: %q", probs)
	}
}

func mustStages(t *testing.T, s string) []failover.StageSpec {
	t.Helper()
	st, err := failover.ParseStages(s)
	must(t, err)
	return st
}
