package drill

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Scenario is a drill: a lab, the steps to run in it, and what must hold at
// the end. Parse and Load read and validate one; Validate checks one built
// in code and fills in its defaults.
type Scenario struct {
	Name        string  `json:"name"`        // [a-z0-9-], 1..63 characters; required
	Description string  `json:"description"` // required, at most 4096 bytes; shown in reports
	Lab         LabSpec `json:"lab"`
	Steps       []Step  `json:"steps"`  // at least one
	Expect      Expect  `json:"expect"` // checked at the end, after the books are checked
}

// Databases a lab can use.
const (
	DBSQLite  = "sqlite"
	DBMariaDB = "mariadb"
)

// Replication modes of a MariaDB lab.
const (
	ReplSemiSync = "semi-sync"
	ReplAsync    = "async"
)

// Lab defaults and bounds.
const (
	DefaultLeaseTTL  = Duration(2 * time.Second)
	DefaultSlotCount = 256
	DefaultUsers     = 200
	// MinSlotCount is the router's smallest slot count
	// (router.MinSlotCount): a smaller map could not be created.
	MinSlotCount = 256
	MaxSlotCount = 16384
)

// LabSpec is the lab a drill runs in. Zero values mean the defaults.
type LabSpec struct {
	// DB is "sqlite", "mariadb", or "" to let the caller decide.
	DB string `json:"db"`
	// Replication is "semi-sync" (the default with mariadb) or "async";
	// MariaDB only.
	Replication string `json:"replication"`
	// LeaseTTL is every guard's lease: default 2s, within [1s, 60s].
	LeaseTTL Duration `json:"leaseTTL"`
	// EtcdMembers is 1 (the default) or 3.
	EtcdMembers int `json:"etcdMembers"`
	// SlotCount is the map's slot count: default 256, a power of two in
	// [256, 16384].
	SlotCount int `json:"slotCount"`
	// Users is the load's user population: default 200.
	Users int `json:"users"`
}

// Step kinds, as Step.Kind returns them and as the YAML keys read.
const (
	KindLoad     = "load"
	KindStopLoad = "stopLoad"
	KindWait     = "wait"
	KindInject   = "inject"
	KindHeal     = "heal"
	KindCutover  = "cutover"
	KindFailover = "failover"
	KindResume   = "resume"
	KindExpect   = "expect"
)

// stepKinds are the kinds in the order of Step's fields.
var stepKinds = []string{KindLoad, KindStopLoad, KindWait, KindInject, KindHeal, KindCutover, KindFailover, KindResume, KindExpect}

// Step is one step of a drill. Exactly one of the pointer fields is set.
// In YAML a kind written without a value ("- stopLoad:", "- resume:") is
// that kind with its defaults.
type Step struct {
	// Name labels the step in the timeline (one line, at most 200
	// bytes); default derived (see Label).
	Name     string        `json:"name,omitempty"`
	Load     *LoadStep     `json:"load,omitempty"`
	StopLoad *StopLoadStep `json:"stopLoad,omitempty"`
	Wait     *WaitStep     `json:"wait,omitempty"`
	Inject   *Fault        `json:"inject,omitempty"`
	Heal     *HealStep     `json:"heal,omitempty"`
	Cutover  *CutoverStep  `json:"cutover,omitempty"`
	Failover *FailoverStep `json:"failover,omitempty"`
	Resume   *ResumeStep   `json:"resume,omitempty"`
	// Expect is checked at this point of the run (MTTR and the like only
	// if they are known by then).
	Expect *Expect `json:"expect,omitempty"`
}

// kinds returns the kinds set, in field order.
func (s Step) kinds() []string {
	set := []bool{s.Load != nil, s.StopLoad != nil, s.Wait != nil, s.Inject != nil, s.Heal != nil,
		s.Cutover != nil, s.Failover != nil, s.Resume != nil, s.Expect != nil}
	var out []string
	for i, ok := range set {
		if ok {
			out = append(out, stepKinds[i])
		}
	}
	return out
}

// Kind returns "load", "stopLoad", "wait", "inject", "heal", "cutover",
// "failover", "resume" or "expect": the kind of the one pointer field set,
// or "" unless exactly one is.
func (s Step) Kind() string {
	if k := s.kinds(); len(k) == 1 {
		return k[0]
	}
	return ""
}

// Label returns Name or, without one, a label derived from the step:
// "inject kill idc:IDC-A", "wait until payments 500", "cutover IDC-A -> IDC-B".
func (s Step) Label() string {
	if s.Name != "" {
		return s.Name
	}
	switch s.Kind() {
	case KindLoad:
		l := s.Load
		w := l.Workers
		if w == 0 {
			w = DefaultWorkers
		}
		out := fmt.Sprintf("load %d workers", w)
		if l.Rate > 0 {
			out += ", " + strconv.FormatFloat(l.Rate, 'f', -1, 64) + "/s"
		}
		if l.Mix != "" && l.Mix != MixPayments {
			out += ", " + l.Mix
		}
		return out
	case KindStopLoad:
		return "stop load"
	case KindWait:
		w := s.Wait
		switch w.Until {
		case "":
			return "wait " + w.For.String()
		case UntilPayments:
			return fmt.Sprintf("wait until payments %d", w.Count)
		case UntilStage:
			return fmt.Sprintf("wait until stage %d", w.Stage)
		case UntilCutoverStep:
			return "wait until cutover-step " + w.Step
		}
		return "wait until " + w.Until
	case KindInject:
		f := s.Inject
		out := "inject " + f.Kind + " " + f.Target
		if f.Kind == FaultLatency && f.Latency > 0 {
			out += " " + f.Latency.String()
		}
		return out
	case KindHeal:
		if s.Heal.All {
			return "heal all"
		}
		return "heal " + s.Heal.Name
	case KindCutover:
		c := s.Cutover
		out := "cutover " + c.From + " -> " + c.To
		if c.Back {
			out = "cutover back"
			if c.From != "" {
				out += " " + c.From + " -> " + c.To
			}
		}
		if c.Background {
			out += " (background)"
		}
		return out
	case KindFailover:
		f := s.Failover
		out := "failover " + f.From + " -> " + f.To
		if f.Background {
			out += " (background)"
		}
		return out
	case KindResume:
		return "resume"
	case KindExpect:
		return "expect"
	}
	return "invalid step"
}

// Load mixes.
const (
	MixPayments     = "payments"      // orders and payments (refunds every 10th)
	MixPaymentsBank = "payments+bank" // and a bank top-up or withdrawal every 25th operation
)

// DefaultWorkers is a load step's default number of workers.
const DefaultWorkers = 8

// LoadStep starts the load generator.
type LoadStep struct {
	// Workers is the number of concurrent payers: default 8, 1..256.
	Workers int `json:"workers"`
	// Rate caps operations per second over all workers; 0 = unbounded.
	Rate float64 `json:"rate"`
	// Mix is "payments" (the default) or "payments+bank".
	Mix string `json:"mix"`
}

// StopLoadStep stops the load generator and waits for its operations in
// flight.
type StopLoadStep struct{}

// Conditions a wait step can wait for.
const (
	UntilPayments    = "payments"     // Count acknowledged payments since the step began
	UntilDetected    = "detected"     // the fault was detected
	UntilRecovered   = "recovered"    // the affected users are served again
	UntilStage       = "stage"        // the running cutover reached stage index >= Stage
	UntilCutoverStep = "cutover-step" // the running cutover reached step Step
	UntilCutoverDone = "cutover-done" // the running cutover or failover ended
)

// Cutover steps a wait step can wait for.
const (
	CutoverFreeze  = "freeze"
	CutoverBarrier = "barrier"
	CutoverData    = "data"
	CutoverFlip    = "flip"
	CutoverVerify  = "verify"
)

// DefaultWaitTimeout bounds a wait for a condition.
const DefaultWaitTimeout = Duration(60 * time.Second)

// WaitStep waits a plain duration (For) or until a condition (Until). In
// YAML it is either a duration ("wait: 3s") or an object.
type WaitStep struct {
	// For is a plain wait.
	For Duration `json:"for"`
	// Until is "payments", "detected", "recovered", "stage",
	// "cutover-step" or "cutover-done".
	Until string `json:"until"`
	// Count is, for "payments", how many acknowledged payments since the
	// step began (> 0).
	Count int `json:"count"`
	// Stage is, for "stage", the 0-based stage index to reach.
	Stage int `json:"stage"`
	// Step is, for "cutover-step": "freeze", "barrier", "data", "flip" or
	// "verify".
	Step string `json:"step"`
	// Timeout fails the run if the condition is not met in time; default
	// 60s. Conditions only.
	Timeout Duration `json:"timeout"`
}

// UnmarshalJSON reads a duration string ("3s") or an object; unknown
// fields are an error.
func (w *WaitStep) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '{' {
		type plain WaitStep
		var p plain
		if err := strictUnmarshal(b, &p); err != nil {
			return err
		}
		*w = WaitStep(p)
		return nil
	}
	return w.decodeShort(b)
}

func (w *WaitStep) decodeShort(b []byte) error {
	if len(b) == 0 || !(b[0] == '"' || isJSONNumber(b)) {
		return &durationError{"want a duration (\"wait: 3s\") or an object with for or until, got " + describeJSON(b)}
	}
	var d Duration
	if err := d.UnmarshalJSON(b); err != nil {
		return err
	}
	*w = WaitStep{For: d}
	return nil
}

// Fault kinds.
const (
	FaultKill      = "kill"      // SIGKILL: a crash, nothing graceful
	FaultStop      = "stop"      // SIGSTOP
	FaultCont      = "cont"      // SIGCONT
	FaultPulse     = "pulse"     // gray failure: SIGSTOP for StopFor every Every, until healed
	FaultRestart   = "restart"   // crash and start again
	FaultPartition = "partition" // blackhole: connections stay open, nothing passes
	FaultLatency   = "latency"   // added latency (+ jitter)
	FaultBandwidth = "bandwidth" // bandwidth cap
	FaultReset     = "reset"     // connections reset, new ones refused
	FaultRequest   = "request"   // requests answered with latency, a status code or an abort
	FaultEtcdStop  = "etcd-stop" // an etcd member stopped
)

// Paths a network fault can cut.
const (
	PathEtcd        = "etcd"
	PathRouter      = "router"
	PathDB          = "db"
	PathReplication = "replication"
	PathController  = "controller"
)

// AllPaths are the network paths, the default of an IDC's network fault.
var AllPaths = []string{PathEtcd, PathRouter, PathDB, PathReplication, PathController}

// DefaultRequestFor is how long a request fault lasts without For.
const DefaultRequestFor = Duration(5 * time.Minute)

// Fault is a fault to inject. Which fields apply depends on Kind; a field
// set for a kind it does not apply to is an error.
type Fault struct {
	// Name is the handle for heal; default "<kind>-<n>" (the n-th fault
	// of that kind).
	Name string `json:"name"`
	// Kind is kill, stop, cont, pulse, restart, partition, latency,
	// bandwidth, reset, request or etcd-stop.
	Kind string `json:"kind"`
	// Target is "idc:NAME", "cell:NAME", "db:NAME", "etcd:leader",
	// "etcd:N", "router", "controller" or "all"; which ones a kind takes
	// is checked.
	Target string `json:"target"`
	// Paths are, for network faults on an IDC, the paths cut: a subset
	// of etcd, router, db, replication, controller; default all (without
	// replication when the lab is sqlite).
	Paths []string `json:"paths"`
	// Latency is added by latency and request faults.
	Latency Duration `json:"latency"`
	// Jitter varies Latency.
	Jitter Duration `json:"jitter"`
	// RateKBps caps a bandwidth fault, in KB/s (> 0).
	RateKBps int64 `json:"rateKBps"`
	// Fraction of requests a request fault hits: (0, 1], default 1.
	Fraction float64 `json:"fraction"`
	// Methods a request fault hits: globs like "POST /v1/pay*" or
	// "/paycell.v1.Pay/*"; default all.
	Methods []string `json:"methods"`
	// Code is the HTTP status (400..599) a request fault answers with.
	Code int `json:"code"`
	// Abort makes a request fault drop the connection.
	Abort bool `json:"abort"`
	// ShadowOnly limits a request fault to shadow traffic.
	ShadowOnly bool `json:"shadowOnly"`
	// For heals the fault automatically after this long; 0 = until a heal
	// step. Request faults always expire: default 5m.
	For Duration `json:"for"`
	// Every is a pulse's period.
	Every Duration `json:"every"`
	// StopFor is how long a pulse keeps the process stopped each period
	// (< Every).
	StopFor Duration `json:"stopFor"`
}

// HealStep heals one fault by name, or all active faults. In YAML
// "heal: all" and "heal: NAME" are short for {all: true} and {name: NAME}.
type HealStep struct {
	// Name is the fault to heal; "" with All.
	Name string `json:"name"`
	// All heals every active fault: restarts what was killed, removes
	// network faults, continues what was stopped.
	All bool `json:"all"`
}

// UnmarshalJSON reads "all", a fault name, or an object; unknown fields are
// an error.
func (h *HealStep) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '{' {
		type plain HealStep
		var p plain
		if err := strictUnmarshal(b, &p); err != nil {
			return err
		}
		*h = HealStep(p)
		return nil
	}
	return h.decodeShort(b)
}

func (h *HealStep) decodeShort(b []byte) error {
	var s string
	if len(b) == 0 || b[0] != '"' || json.Unmarshal(b, &s) != nil || s == "" {
		return fmt.Errorf("want \"all\", a fault name, or an object with name or all; got %s", describeJSON(b))
	}
	if s == "all" {
		*h = HealStep{All: true}
	} else {
		*h = HealStep{Name: s}
	}
	return nil
}

// Cutover defaults.
const (
	DefaultStages = "1/8,1"
	DefaultBake   = Duration(500 * time.Millisecond)
)

// CutoverStep runs a planned cutover.
type CutoverStep struct {
	// From is the source IDC; required unless Back.
	From string `json:"from"`
	// To is the target IDC; required unless Back; not From.
	To string `json:"to"`
	// Stages in failover.ParseStages syntax; default "1/8,1". Not with
	// Back, which reverses the previous cutover's plan stage by stage.
	Stages string `json:"stages"`
	// Bake is each stage's soak under the gates; default 500ms.
	Bake Duration `json:"bake"`
	// Background runs the cutover while the next steps go on; a later
	// "wait: {until: cutover-done}" waits for it.
	Background bool `json:"background"`
	// ID is the cutover's ID; default "cutover-<n>" (the n-th cutover
	// step).
	ID string `json:"id"`
	// Back moves back exactly what the previous cutover moved. From and
	// To then default to that cutover's To and From (and must be those if
	// given).
	Back bool `json:"back"`
}

// DefaultWindow is a failover's default liveness window.
const DefaultWindow = Duration(time.Second)

// FailoverStep runs an emergency failover of a lost IDC.
type FailoverStep struct {
	// From is the lost IDC; required.
	From string `json:"from"`
	// To is the IDC taking over; required; not From.
	To string `json:"to"`
	// Force fails over even if the lost IDC's guards show life.
	Force bool `json:"force"`
	// SemiSyncOff switches semi-sync off on the target IDC's server first
	// (its master waits for a lost replica). MariaDB only.
	SemiSyncOff bool `json:"semiSyncOff"`
	// Window is the liveness window: default 1s, >= 1s.
	Window Duration `json:"window"`
	// Background runs the failover while the next steps go on.
	Background bool `json:"background"`
}

// DefaultResumeTimeout bounds a resume.
const DefaultResumeTimeout = Duration(60 * time.Second)

// ResumeStep resumes the cutover whose controller was killed (the drill's
// last cutover or failover).
type ResumeStep struct {
	// Timeout: default 60s.
	Timeout Duration `json:"timeout"`
}

// Final statuses Expect.Cutover can ask for.
const (
	CutoverDone       = "done"
	CutoverRolledBack = "rolled-back"
	CutoverFailed     = "failed"
)

// Expect is what must hold: at the end of a drill (Scenario.Expect) or at a
// point of it (an expect step). Nil pointers and zero durations mean the
// defaults, which WithDefaults fills in; Validate leaves them nil, so an
// Expect says what its author wrote.
type Expect struct {
	// MaxLost is how many acknowledged operations may be missing
	// afterwards (the RPO count): default 0; -1 = any.
	MaxLost *int `json:"maxLost"`
	// MaxDoubleAdmitted is how many writes two cells may have admitted
	// for the same slot at once: default 0; -1 = any.
	MaxDoubleAdmitted *int `json:"maxDoubleAdmitted"`
	// MaxFailed is how many operations may fail after all retries:
	// default -1 (any).
	MaxFailed *int `json:"maxFailed"`
	// MoneyConserved checks that money is conserved: default true; false
	// = not checked.
	MoneyConserved *bool `json:"moneyConserved"`
	// Invariants checks that every book invariant holds: default true.
	Invariants *bool `json:"invariants"`
	// MaxMTTR bounds the MTTR; 0 = not checked.
	MaxMTTR Duration `json:"maxMTTR"`
	// MaxDetect bounds the time to detect; 0 = not checked.
	MaxDetect Duration `json:"maxDetect"`
	// Cutover is the final status of the drill's last cutover or
	// failover: "" (any), "done", "rolled-back" or "failed".
	Cutover string `json:"cutover"`
}

// WithDefaults returns e with every nil pointer set to its default:
// MaxLost 0, MaxDoubleAdmitted 0, MaxFailed -1, MoneyConserved true,
// Invariants true. It never shares pointers with e.
func (e Expect) WithDefaults() Expect {
	intOr := func(p *int, def int) *int {
		v := def
		if p != nil {
			v = *p
		}
		return &v
	}
	boolOr := func(p *bool, def bool) *bool {
		v := def
		if p != nil {
			v = *p
		}
		return &v
	}
	e.MaxLost = intOr(e.MaxLost, 0)
	e.MaxDoubleAdmitted = intOr(e.MaxDoubleAdmitted, 0)
	e.MaxFailed = intOr(e.MaxFailed, -1)
	e.MoneyConserved = boolOr(e.MoneyConserved, true)
	e.Invariants = boolOr(e.Invariants, true)
	return e
}

// MaxScenarioBytes bounds a scenario file.
const MaxScenarioBytes = 1 << 20

// Parse reads a scenario from YAML (or JSON) and validates it (see
// Validate, which also fills in the defaults). name names the file in
// errors. Every error is a *ScenarioError.
func Parse(name string, data []byte) (*Scenario, error) {
	s, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	if err := s.validate(name); err != nil {
		return nil, err
	}
	return s, nil
}

// Load reads and parses the scenario file at path. A file that cannot be
// read gives the *fs.PathError; a bad scenario a *ScenarioError.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("drill: %w", err)
	}
	return Parse(path, data)
}

// Target kinds, the part of a fault target before the colon.
const (
	TargetIDC        = "idc"
	TargetCell       = "cell"
	TargetDB         = "db"
	TargetEtcd       = "etcd"
	TargetRouter     = "router"
	TargetController = "controller"
	TargetAll        = "all"
)

// ParseTarget splits a fault target into its kind and name: "idc:IDC-A"
// gives ("idc", "IDC-A"), "router" gives ("router", ""), "etcd:leader"
// gives ("etcd", "leader"). It checks the syntax only, not whether a fault
// kind takes the target.
func ParseTarget(s string) (kind, name string, err error) {
	kind, name, hasName := strings.Cut(s, ":")
	switch kind {
	case TargetRouter, TargetController, TargetAll:
		if hasName {
			return "", "", fmt.Errorf("target %q: %s takes no name", s, kind)
		}
		return kind, "", nil
	case TargetIDC, TargetCell, TargetDB:
		if !hasName || !validName(name) {
			return "", "", fmt.Errorf("target %q: want %s:NAME with NAME of 1-63 letters, digits, '.', '_' or '-'", s, kind)
		}
		return kind, name, nil
	case TargetEtcd:
		if name == "leader" {
			return kind, name, nil
		}
		if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < 10 && strconv.Itoa(n) == name {
			return kind, name, nil
		}
		return "", "", fmt.Errorf("target %q: want etcd:leader or etcd:N with N a member index", s)
	}
	return "", "", fmt.Errorf("target %q: want idc:NAME, cell:NAME, db:NAME, etcd:leader, etcd:N, router, controller or all", s)
}

// validName reports whether s is a name: [A-Za-z0-9._-]{1,63}.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
