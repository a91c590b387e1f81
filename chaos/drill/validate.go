package drill

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cellkit/cellkit/failover"
)

// Validate checks the scenario, its steps against each other and against
// the lab, and fills in the defaults of every field whose zero value means
// one:
//
//   - lab: replication "semi-sync" when db is "mariadb" (left "" when db
//     is "", for the caller to decide), leaseTTL 2s, etcdMembers 1,
//     slotCount 256, users 200;
//   - load: workers 8, mix "payments";
//   - wait until a condition: timeout 60s;
//   - inject: name "<kind>-<n>"; paths all five for a network fault on an
//     IDC (without replication when db is "sqlite"); for a request fault
//     fraction 1 and for 5m;
//   - cutover: stages "1/8,1" (not with back), bake 500ms, id
//     "cutover-<n>"; with back, from and to are the previous cutover's to
//     and from;
//   - failover: window 1s;
//   - resume: timeout 60s.
//
// Expect blocks are left as written: Expect.WithDefaults gives their
// defaults. Empty lists (paths, methods) become nil. Validate is
// idempotent. Errors are *ScenarioError with File "".
func (s *Scenario) Validate() error { return s.validate("") }

// checker carries what earlier steps did, for the checks of later ones.
type checker struct {
	file      string
	s         *Scenario
	mariadbOK bool // db is mariadb, or "" (the runner re-checks)

	faults      map[string]*faultState
	kindCount   map[string]int
	anyFault    bool
	loadStep    int // the step that started the running load; -1
	bgStep      int // the step that started the running background cutover or failover; -1
	bgStages    int // its stage count; 0 for a failover
	lastCut     *CutoverStep
	lastCutStep int
	cutStages   map[int]int // step -> stage count of its cutover
	anyMove     bool        // a cutover or failover ran before
	ctrlKilled  int         // step of a kill controller not yet resumed; -1
	ids         map[string]int
	cutoverN    int
}

type faultState struct {
	step     int
	kind     string
	action   bool // cont and restart happen at once: nothing to heal
	healedAt int  // step of the heal; -1
}

func (s *Scenario) validate(file string) error {
	c := &checker{file: file, s: s, faults: map[string]*faultState{}, kindCount: map[string]int{},
		loadStep: -1, bgStep: -1, ctrlKilled: -1, ids: map[string]int{}, cutStages: map[int]int{}}
	if err := c.scenario(); err != nil {
		return err
	}
	if err := c.lab(); err != nil {
		return err
	}
	if len(s.Steps) == 0 {
		return c.top("steps", "a scenario needs at least one step")
	}
	for i := range s.Steps {
		if err := c.step(i, &s.Steps[i]); err != nil {
			return err
		}
	}
	if err := c.expect(-1, "expect", &s.Expect); err != nil {
		return err
	}
	return nil
}

func (c *checker) top(field, format string, args ...any) *ScenarioError {
	return &ScenarioError{File: c.file, Step: -1, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// at returns an error in step i; field is relative to the step.
func (c *checker) at(i int, field, format string, args ...any) *ScenarioError {
	return &ScenarioError{File: c.file, Step: i, Kind: c.s.Steps[i].Kind(), Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (c *checker) scenario() error {
	s := c.s
	switch {
	case s.Name == "":
		return c.top("name", "name is required")
	case !scenarioName(s.Name):
		return c.top("name", "name %q: want 1-63 lower-case letters, digits and '-'", s.Name)
	case strings.TrimSpace(s.Description) == "":
		return c.top("description", "description is required (reports show it)")
	}
	if p := textProblem(s.Description, true, 4096); p != "" {
		return c.top("description", "description %s", p)
	}
	return nil
}

func scenarioName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// textProblem says what is wrong with free text, or "".
func textProblem(s string, multiline bool, max int) string {
	if len(s) > max {
		return fmt.Sprintf("has %d bytes (at most %d)", len(s), max)
	}
	if !utf8.ValidString(s) {
		return "is not UTF-8"
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		// Control characters and the Unicode line separators would not
		// survive a trip through YAML, and garble tables.
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return fmt.Sprintf("has the control character %U", r)
		}
	}
	return ""
}

func (c *checker) lab() error {
	l := &c.s.Lab
	switch l.DB {
	case "", DBSQLite, DBMariaDB:
	default:
		return c.top("lab.db", "lab.db %q: want \"sqlite\", \"mariadb\", or nothing (the caller decides)", l.DB)
	}
	c.mariadbOK = l.DB != DBSQLite
	switch l.Replication {
	case "":
		if l.DB == DBMariaDB {
			l.Replication = ReplSemiSync
		}
	case ReplSemiSync, ReplAsync:
		if !c.mariadbOK {
			return c.top("lab.replication", "lab.replication applies to mariadb only (lab.db is sqlite)")
		}
	default:
		return c.top("lab.replication", "lab.replication %q: want \"semi-sync\" or \"async\"", l.Replication)
	}
	if l.LeaseTTL == 0 {
		l.LeaseTTL = DefaultLeaseTTL
	}
	if l.LeaseTTL < Duration(time.Second) || l.LeaseTTL > Duration(time.Minute) {
		return c.top("lab.leaseTTL", "lab.leaseTTL %s: want 1s to 60s", l.LeaseTTL)
	}
	if l.EtcdMembers == 0 {
		l.EtcdMembers = 1
	}
	if l.EtcdMembers != 1 && l.EtcdMembers != 3 {
		return c.top("lab.etcdMembers", "lab.etcdMembers %d: want 1 or 3", l.EtcdMembers)
	}
	if l.SlotCount == 0 {
		l.SlotCount = DefaultSlotCount
	}
	if l.SlotCount < MinSlotCount || l.SlotCount > MaxSlotCount || l.SlotCount&(l.SlotCount-1) != 0 {
		return c.top("lab.slotCount", "lab.slotCount %d: want a power of two from %d to %d", l.SlotCount, MinSlotCount, MaxSlotCount)
	}
	if l.Users == 0 {
		l.Users = DefaultUsers
	}
	if l.Users < 0 {
		return c.top("lab.users", "lab.users %d: want at least 1", l.Users)
	}
	return nil
}

func (c *checker) step(i int, st *Step) error {
	kinds := st.kinds()
	switch {
	case len(kinds) == 0:
		return c.at(i, "", "a step needs one of %s", strings.Join(stepKinds, ", "))
	case len(kinds) > 1:
		return c.at(i, "", "a step has exactly one of %s; this one has %s", strings.Join(stepKinds, ", "), strings.Join(kinds, " and "))
	}
	if p := textProblem(st.Name, false, 200); p != "" {
		return c.at(i, "name", "name %s", p)
	}
	switch kinds[0] {
	case KindLoad:
		return c.load(i, st.Load)
	case KindStopLoad:
		if c.loadStep < 0 {
			return c.at(i, "stopLoad", "no load is running (start it with a load step)")
		}
		c.loadStep = -1
	case KindWait:
		return c.wait(i, st.Wait)
	case KindInject:
		return c.fault(i, st.Inject)
	case KindHeal:
		return c.heal(i, st.Heal)
	case KindCutover:
		return c.cutover(i, st.Cutover)
	case KindFailover:
		return c.failover(i, st.Failover)
	case KindResume:
		r := st.Resume
		if c.ctrlKilled < 0 {
			return c.at(i, "resume", "resume needs an earlier step that kills the controller ({kind: kill, target: controller}) since the last resume")
		}
		if !c.anyMove {
			return c.at(i, "resume", "resume needs a cutover or failover before it: there is nothing to resume")
		}
		c.ctrlKilled = -1
		if r.Timeout == 0 {
			r.Timeout = DefaultResumeTimeout
		}
	case KindExpect:
		return c.expect(i, "expect", st.Expect)
	}
	return nil
}

func (c *checker) load(i int, l *LoadStep) error {
	if c.loadStep >= 0 {
		return c.at(i, "load", "the load started at step %d is still running; stop it first (stopLoad)", c.loadStep+1)
	}
	c.loadStep = i
	if l.Workers == 0 {
		l.Workers = DefaultWorkers
	}
	if l.Workers < 1 || l.Workers > 256 {
		return c.at(i, "load.workers", "workers %d: want 1 to 256", l.Workers)
	}
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		return c.at(i, "load.rate", "rate %v: want operations per second >= 0 (0 = unbounded)", l.Rate)
	}
	switch l.Mix {
	case "":
		l.Mix = MixPayments
	case MixPayments, MixPaymentsBank:
	default:
		return c.at(i, "load.mix", "mix %q: want %q or %q", l.Mix, MixPayments, MixPaymentsBank)
	}
	return nil
}

var untils = []string{UntilPayments, UntilDetected, UntilRecovered, UntilStage, UntilCutoverStep, UntilCutoverDone}
var cutoverSteps = []string{CutoverFreeze, CutoverBarrier, CutoverData, CutoverFlip, CutoverVerify}

func (c *checker) wait(i int, w *WaitStep) error {
	switch {
	case w.For == 0 && w.Until == "":
		return c.at(i, "wait", "a wait needs for (a duration) or until (a condition)")
	case w.For != 0 && w.Until != "":
		return c.at(i, "wait", "a wait has for or until, not both")
	}
	if w.Until == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"count", w.Count != 0}, {"stage", w.Stage != 0}, {"step", w.Step != ""}, {"timeout", w.Timeout != 0}} {
			if f.set {
				return c.at(i, "wait."+f.name, "%s applies to a wait until a condition, not to a plain wait", f.name)
			}
		}
		return nil
	}
	if !slices.Contains(untils, w.Until) {
		return c.at(i, "wait.until", "until %q: want one of %s", w.Until, strings.Join(untils, ", "))
	}
	if w.Count != 0 && w.Until != UntilPayments {
		return c.at(i, "wait.count", "count applies to until: payments")
	}
	if w.Stage != 0 && w.Until != UntilStage {
		return c.at(i, "wait.stage", "stage applies to until: stage")
	}
	if w.Step != "" && w.Until != UntilCutoverStep {
		return c.at(i, "wait.step", "step applies to until: cutover-step")
	}
	if w.Timeout == 0 {
		w.Timeout = DefaultWaitTimeout
	}
	running := func() error {
		if c.bgStep < 0 {
			return c.at(i, "wait.until", "until %s needs a background cutover or failover running (background: true), started by an earlier step and not yet waited for with until: cutover-done", w.Until)
		}
		return nil
	}
	switch w.Until {
	case UntilPayments:
		if w.Count <= 0 {
			return c.at(i, "wait.count", "until payments needs count > 0 (acknowledged payments since the step began)")
		}
		if c.loadStep < 0 {
			return c.at(i, "wait.until", "until payments needs the load running (an earlier load step)")
		}
	case UntilDetected, UntilRecovered:
		if !c.anyFault {
			return c.at(i, "wait.until", "until %s needs a fault injected by an earlier step", w.Until)
		}
	case UntilStage:
		if err := running(); err != nil {
			return err
		}
		if w.Stage < 0 {
			return c.at(i, "wait.stage", "stage %d: want a 0-based stage index", w.Stage)
		}
		if c.bgStages > 0 && w.Stage >= c.bgStages {
			return c.at(i, "wait.stage", "stage %d: the cutover of step %d has %d stages (0 to %d)", w.Stage, c.bgStep+1, c.bgStages, c.bgStages-1)
		}
	case UntilCutoverStep:
		if !slices.Contains(cutoverSteps, w.Step) {
			return c.at(i, "wait.step", "step %q: want one of %s", w.Step, strings.Join(cutoverSteps, ", "))
		}
		return running()
	case UntilCutoverDone:
		if err := running(); err != nil {
			return err
		}
		c.bgStep, c.bgStages = -1, 0
	}
	return nil
}

var faultKinds = []string{FaultKill, FaultStop, FaultCont, FaultPulse, FaultRestart, FaultPartition, FaultLatency,
	FaultBandwidth, FaultReset, FaultRequest, FaultEtcdStop}

// faultTargets are the target kinds each fault kind takes.
var faultTargets = map[string][]string{
	FaultKill:      {TargetIDC, TargetCell, TargetDB, TargetRouter, TargetController},
	FaultStop:      {TargetDB},
	FaultCont:      {TargetDB},
	FaultPulse:     {TargetDB},
	FaultRestart:   {TargetCell, TargetIDC, TargetDB, TargetRouter, TargetEtcd},
	FaultPartition: {TargetIDC},
	FaultLatency:   {TargetIDC, TargetCell},
	FaultBandwidth: {TargetIDC, TargetCell},
	FaultReset:     {TargetIDC, TargetCell},
	FaultRequest:   {TargetIDC, TargetCell, TargetAll},
	FaultEtcdStop:  {TargetEtcd},
}

var targetSyntax = map[string]string{
	TargetIDC: "idc:NAME", TargetCell: "cell:NAME", TargetDB: "db:NAME", TargetEtcd: "etcd:leader or etcd:N",
	TargetRouter: "router", TargetController: "controller", TargetAll: "all",
}

// networkFault reports whether kind cuts network paths.
func networkFault(kind string) bool {
	switch kind {
	case FaultPartition, FaultLatency, FaultBandwidth, FaultReset:
		return true
	}
	return false
}

func orList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

func (c *checker) fault(i int, f *Fault) error {
	if !slices.Contains(faultKinds, f.Kind) {
		if f.Kind == "" {
			return c.at(i, "inject.kind", "kind is required: one of %s", strings.Join(faultKinds, ", "))
		}
		return c.at(i, "inject.kind", "kind %q: want one of %s", f.Kind, strings.Join(faultKinds, ", "))
	}
	tk, tn, err := ParseTarget(f.Target)
	allowed := faultTargets[f.Kind]
	if err != nil || !slices.Contains(allowed, tk) {
		var want []string
		for _, a := range allowed {
			want = append(want, targetSyntax[a])
		}
		if f.Target == "" {
			return c.at(i, "inject.target", "target is required: %s takes %s", f.Kind, orList(want))
		}
		return c.at(i, "inject.target", "%s takes target %s, not %q", f.Kind, orList(want), f.Target)
	}
	switch tk {
	case TargetDB:
		if !c.mariadbOK {
			return c.at(i, "inject.target", "target %s needs lab.db mariadb: a sqlite lab has no database servers", f.Target)
		}
	case TargetEtcd:
		if n, err := strconv.Atoi(tn); err == nil && n >= c.s.Lab.EtcdMembers {
			return c.at(i, "inject.target", "target %s: the lab has %s (etcd:0 to etcd:%d)", f.Target, plural(c.s.Lab.EtcdMembers, "etcd member", "etcd members"), c.s.Lab.EtcdMembers-1)
		}
		if f.Kind == FaultEtcdStop && c.s.Lab.EtcdMembers != 3 {
			return c.at(i, "inject.kind", "etcd-stop needs lab.etcdMembers 3 (the lab has %d)", c.s.Lab.EtcdMembers)
		}
	}

	// Fields by kind: a field set for a kind it does not apply to is a
	// mistake in the file, not something to ignore.
	isReq := f.Kind == FaultRequest
	notFor := func(field string, set bool, applies bool, to string) error {
		if set && !applies {
			return c.at(i, "inject."+field, "%s applies to %s faults, not %s", field, to, f.Kind)
		}
		return nil
	}
	for _, e := range []error{
		notFor("latency", f.Latency != 0, f.Kind == FaultLatency || isReq, "latency and request"),
		notFor("jitter", f.Jitter != 0, f.Kind == FaultLatency || isReq, "latency and request"),
		notFor("rateKBps", f.RateKBps != 0, f.Kind == FaultBandwidth, "bandwidth"),
		notFor("fraction", f.Fraction != 0, isReq, "request"),
		notFor("methods", len(f.Methods) != 0, isReq, "request"),
		notFor("code", f.Code != 0, isReq, "request"),
		notFor("abort", f.Abort, isReq, "request"),
		notFor("shadowOnly", f.ShadowOnly, isReq, "request"),
		notFor("every", f.Every != 0, f.Kind == FaultPulse, "pulse"),
		notFor("stopFor", f.StopFor != 0, f.Kind == FaultPulse, "pulse"),
	} {
		if e != nil {
			return e
		}
	}
	if len(f.Paths) != 0 && !(networkFault(f.Kind) && tk == TargetIDC) {
		return c.at(i, "inject.paths", "paths applies to partition, latency, bandwidth and reset faults on an idc: target, not to %s %s", f.Kind, f.Target)
	}
	if f.For != 0 && (f.Kind == FaultCont || f.Kind == FaultRestart) {
		return c.at(i, "inject.for", "for does not apply to %s, which happens at once", f.Kind)
	}

	switch f.Kind {
	case FaultLatency:
		if f.Latency <= 0 {
			return c.at(i, "inject.latency", "a latency fault needs latency > 0")
		}
	case FaultBandwidth:
		if f.RateKBps <= 0 {
			return c.at(i, "inject.rateKBps", "a bandwidth fault needs rateKBps > 0")
		}
	case FaultPulse:
		if !(f.Every > f.StopFor && f.StopFor > 0) {
			return c.at(i, "inject.every", "a pulse needs every > stopFor > 0 (got every %s, stopFor %s)", f.Every, f.StopFor)
		}
	case FaultRequest:
		if f.Fraction == 0 {
			f.Fraction = 1
		}
		if !(f.Fraction > 0 && f.Fraction <= 1) {
			return c.at(i, "inject.fraction", "fraction %v: want more than 0, at most 1", f.Fraction)
		}
		if f.Code != 0 && (f.Code < 400 || f.Code > 599) {
			return c.at(i, "inject.code", "code %d: want an HTTP status from 400 to 599", f.Code)
		}
		if f.Code != 0 && f.Abort {
			return c.at(i, "inject.abort", "a request fault answers with code or aborts, not both")
		}
		if f.Latency == 0 && f.Code == 0 && !f.Abort {
			return c.at(i, "inject", "a request fault needs latency, code or abort")
		}
		for j, m := range f.Methods {
			if p := textProblem(m, false, 200); m == "" || p != "" {
				return c.at(i, fmt.Sprintf("inject.methods[%d]", j), "method %q: want a glob like \"POST /v1/pay*\" or \"/paycell.v1.Pay/*\"", m)
			}
			if _, err := path.Match(m, ""); err != nil {
				return c.at(i, fmt.Sprintf("inject.methods[%d]", j), "method %q is not a valid glob: %v", m, err)
			}
		}
		if f.For == 0 {
			f.For = DefaultRequestFor
		}
	}
	if f.Jitter != 0 && f.Latency == 0 {
		return c.at(i, "inject.jitter", "jitter needs latency")
	}
	if len(f.Methods) == 0 {
		f.Methods = nil
	}
	if networkFault(f.Kind) && tk == TargetIDC {
		if len(f.Paths) == 0 {
			f.Paths = nil
			for _, p := range AllPaths {
				if p != PathReplication || c.mariadbOK {
					f.Paths = append(f.Paths, p)
				}
			}
		}
		for j, p := range f.Paths {
			field := fmt.Sprintf("inject.paths[%d]", j)
			if !slices.Contains(AllPaths, p) {
				return c.at(i, field, "path %q: want some of %s", p, strings.Join(AllPaths, ", "))
			}
			if slices.Contains(f.Paths[:j], p) {
				return c.at(i, field, "path %q is listed twice", p)
			}
			if p == PathReplication && !c.mariadbOK {
				return c.at(i, field, "path replication needs lab.db mariadb: a sqlite lab does not replicate")
			}
		}
	} else {
		f.Paths = nil
	}

	// The name: given, or "<kind>-<n>".
	if f.Name == "" {
		for {
			c.kindCount[f.Kind]++
			n := fmt.Sprintf("%s-%d", f.Kind, c.kindCount[f.Kind])
			if _, taken := c.faults[n]; !taken {
				f.Name = n
				break
			}
		}
	} else {
		if !validName(f.Name) {
			return c.at(i, "inject.name", "name %q: want 1-63 letters, digits, '.', '_' or '-'", f.Name)
		}
		if f.Name == "all" {
			return c.at(i, "inject.name", "name \"all\" is taken by heal: all")
		}
		if old, taken := c.faults[f.Name]; taken {
			return c.at(i, "inject.name", "name %q is already the name of the fault of step %d", f.Name, old.step+1)
		}
	}
	c.faults[f.Name] = &faultState{step: i, kind: f.Kind, action: f.Kind == FaultCont || f.Kind == FaultRestart, healedAt: -1}
	c.anyFault = true
	if f.Kind == FaultKill && tk == TargetController {
		c.ctrlKilled = i
	}
	return nil
}

func (c *checker) heal(i int, h *HealStep) error {
	switch {
	case h.Name == "" && !h.All:
		return c.at(i, "heal", "heal needs a fault name or all")
	case h.Name != "" && h.All:
		return c.at(i, "heal", "heal takes a fault name or all, not both")
	}
	if h.All {
		for _, f := range c.faults {
			if f.healedAt < 0 && !f.action {
				f.healedAt = i
			}
		}
		return nil
	}
	f, ok := c.faults[h.Name]
	switch {
	case !ok:
		var names []string
		for n, f := range c.faults {
			if !f.action && f.healedAt < 0 {
				names = append(names, strconv.Quote(n))
			}
		}
		slices.Sort(names)
		if len(names) == 0 {
			return c.at(i, "heal.name", "no fault named %q was injected before this step (no fault is active)", h.Name)
		}
		return c.at(i, "heal.name", "no fault named %q was injected before this step (active: %s)", h.Name, strings.Join(names, ", "))
	case f.action:
		return c.at(i, "heal.name", "%s (step %d) is a %s, which happens at once: there is nothing to heal", h.Name, f.step+1, f.kind)
	case f.healedAt >= 0:
		return c.at(i, "heal.name", "%s (step %d) was already healed at step %d", h.Name, f.step+1, f.healedAt+1)
	}
	f.healedAt = i
	return nil
}

func (c *checker) cutover(i int, ct *CutoverStep) error {
	stages := 0
	if ct.Back {
		if c.lastCut == nil {
			return c.at(i, "cutover.back", "back needs an earlier cutover to move back")
		}
		if ct.Stages != "" {
			return c.at(i, "cutover.stages", "stages does not apply with back, which reverses the cutover of step %d stage by stage", c.lastCutStep+1)
		}
		if ct.From != "" && ct.From != c.lastCut.To {
			return c.at(i, "cutover.from", "from %q: back moves back from %s, where the cutover of step %d moved to", ct.From, c.lastCut.To, c.lastCutStep+1)
		}
		if ct.To != "" && ct.To != c.lastCut.From {
			return c.at(i, "cutover.to", "to %q: back moves back to %s, where the cutover of step %d moved from", ct.To, c.lastCut.From, c.lastCutStep+1)
		}
		ct.From, ct.To = c.lastCut.To, c.lastCut.From
		stages = c.cutStages[c.lastCutStep]
	} else {
		if err := c.idcs(i, "cutover", ct.From, ct.To); err != nil {
			return err
		}
		if ct.Stages == "" {
			ct.Stages = DefaultStages
		}
		specs, err := failover.ParseStages(ct.Stages)
		if err != nil {
			return c.at(i, "cutover.stages", "stages %q: %v", ct.Stages, err)
		}
		stages = len(specs)
	}
	if ct.Bake == 0 {
		ct.Bake = DefaultBake
	}
	c.cutoverN++
	if ct.ID == "" {
		for n := c.cutoverN; ; n++ {
			id := fmt.Sprintf("cutover-%d", n)
			if _, taken := c.ids[id]; !taken {
				ct.ID = id
				break
			}
		}
	} else {
		if !validName(ct.ID) {
			return c.at(i, "cutover.id", "id %q: want 1-63 letters, digits, '.', '_' or '-'", ct.ID)
		}
		if old, taken := c.ids[ct.ID]; taken {
			return c.at(i, "cutover.id", "id %q is already the id of the cutover of step %d", ct.ID, old+1)
		}
	}
	c.ids[ct.ID] = i
	c.lastCut, c.lastCutStep, c.cutStages[i] = ct, i, stages
	c.anyMove = true
	if ct.Background {
		c.bgStep, c.bgStages = i, stages
	}
	return nil
}

// idcs checks a move's from and to.
func (c *checker) idcs(i int, kind, from, to string) error {
	for _, f := range []struct{ name, v string }{{"from", from}, {"to", to}} {
		if f.v == "" {
			return c.at(i, kind+"."+f.name, "%s is required (an IDC)", f.name)
		}
		if !validName(f.v) {
			return c.at(i, kind+"."+f.name, "%s %q: want an IDC name of 1-63 letters, digits, '.', '_' or '-'", f.name, f.v)
		}
	}
	if from == to {
		return c.at(i, kind+".to", "to is from (%s): a move needs two IDCs", from)
	}
	return nil
}

func (c *checker) failover(i int, f *FailoverStep) error {
	if err := c.idcs(i, "failover", f.From, f.To); err != nil {
		return err
	}
	if f.SemiSyncOff && !c.mariadbOK {
		return c.at(i, "failover.semiSyncOff", "semiSyncOff needs lab.db mariadb")
	}
	if f.Window == 0 {
		f.Window = DefaultWindow
	}
	if f.Window < Duration(time.Second) {
		return c.at(i, "failover.window", "window %s: want at least 1s", f.Window)
	}
	c.anyMove = true
	if f.Background {
		c.bgStep, c.bgStages = i, 0
	}
	return nil
}

var cutoverStatuses = []string{CutoverDone, CutoverRolledBack, CutoverFailed}

// expect checks an Expect; i is its step, or -1 for the scenario's.
func (c *checker) expect(i int, field string, e *Expect) error {
	bad := func(f, format string, args ...any) error {
		if i < 0 {
			return c.top(field+"."+f, field+"."+f+" "+format, args...)
		}
		return c.at(i, field+"."+f, f+" "+format, args...)
	}
	for _, f := range []struct {
		name string
		p    *int
	}{{"maxLost", e.MaxLost}, {"maxDoubleAdmitted", e.MaxDoubleAdmitted}, {"maxFailed", e.MaxFailed}} {
		if f.p != nil && *f.p < -1 {
			return bad(f.name, "%d: want a count, or -1 for any", *f.p)
		}
	}
	if e.Cutover != "" {
		if !slices.Contains(cutoverStatuses, e.Cutover) {
			return bad("cutover", "%q: want %s (or nothing for any)", e.Cutover, orList(quoteAll(cutoverStatuses)))
		}
		if !c.anyMove && i < 0 {
			return bad("cutover", "%q: the drill runs no cutover or failover", e.Cutover)
		}
		if !c.anyMove {
			return bad("cutover", "%q: no cutover or failover runs before this step", e.Cutover)
		}
	}
	return nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
