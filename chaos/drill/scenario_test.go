package drill_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/router"
)

// scenario wraps steps (YAML list items, one per string) in a minimal
// valid scenario.
func scenario(lab string, steps ...string) string {
	var b strings.Builder
	b.WriteString("name: t\ndescription: test\n")
	if lab != "" {
		b.WriteString("lab: " + lab + "\n")
	}
	b.WriteString("steps:\n")
	for _, s := range steps {
		b.WriteString("  - " + s + "\n")
	}
	return b.String()
}

func TestParseErrorFields(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		step  int
		kind  string
		field string
		msg   string // a part of the message
	}{
		{"unknown field in a step", scenario("", "{wait: 1s}", "{wait: 1s}", "inject: {kind: latency, target: 'idc:A', lantency: 2s}"),
			2, "inject", "inject.lantency", `unknown field "lantency"`},
		{"exact case", scenario("", "load: {Workers: 3}"), 0, "load", "load.Workers", `unknown field "Workers" (did you mean "workers"?)`},
		{"unknown field in lab", scenario("{slotcount: 256}", "wait: 1s"), -1, "", "lab.slotcount", `did you mean "slotCount"?`},
		{"unknown kind", scenario("", "waitt: 1s"), 0, "", "waitt", `did you mean "wait"?`},
		{"type error path", scenario("", "inject: {kind: request, target: all, methods: [1, {a: b}]}"), 0, "inject", "inject.methods[1]", "methods[1]: want a string, got an object"},
		{"validation field", scenario("", "cutover: {from: A, to: B, stages: '1/3,1/4'}"), 0, "cutover", "cutover.stages", "stage fractions must increase"},
		{"cross-step", scenario("", "heal: gone"), 0, "heal", "heal.name", `no fault named "gone"`},
		{"lab", scenario("{etcdMembers: 5}", "wait: 1s"), -1, "", "lab.etcdMembers", "want 1 or 3"},
		{"two kinds", scenario("", "{wait: 1s, load: {}}"), 0, "", "", "this one has load and wait"},
		{"final expect", scenario("", "wait: 1s") + "expect: {maxFailed: -3}\n", -1, "", "expect.maxFailed", "want a count"},
		{"step expect", scenario("", "expect: {maxDoubleAdmitted: -9}"), 0, "expect", "expect.maxDoubleAdmitted", "want a count"},
		{"yaml", "name: [", -1, "", "", "yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := drill.Parse("f.yaml", []byte(tt.yaml))
			var se *drill.ScenarioError
			if !errors.As(err, &se) {
				t.Fatalf("got %T %v, want a *ScenarioError", err, err)
			}
			if !errors.Is(err, drill.ErrBadScenario) {
				t.Errorf("%v does not wrap ErrBadScenario", err)
			}
			if se.File != "f.yaml" || se.Step != tt.step || se.Kind != tt.kind || se.Field != tt.field {
				t.Errorf("got File %q Step %d Kind %q Field %q, want f.yaml %d %q %q", se.File, se.Step, se.Kind, se.Field, tt.step, tt.kind, tt.field)
			}
			if !strings.Contains(se.Msg, tt.msg) {
				t.Errorf("message %q does not say %q", se.Msg, tt.msg)
			}
		})
	}
}

func TestScenarioErrorText(t *testing.T) {
	tests := []struct {
		err  drill.ScenarioError
		want string
	}{
		{drill.ScenarioError{File: "a.yaml", Step: 2, Kind: "inject", Msg: `unknown field "lantency"`}, `a.yaml: step 3 (inject): unknown field "lantency"`},
		{drill.ScenarioError{File: "a.yaml", Step: 0, Msg: "m"}, "a.yaml: step 1: m"},
		{drill.ScenarioError{File: "a.yaml", Step: -1, Msg: "m"}, "a.yaml: m"},
		{drill.ScenarioError{Step: -1, Msg: "m"}, "m"},
		{drill.ScenarioError{Step: 4, Kind: "wait", Msg: "m"}, "step 5 (wait): m"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	s, err := drill.Parse("d", []byte(scenario("{db: mariadb}",
		"load:",
		"inject: {kind: partition, target: 'idc:IDC-A'}",
		"inject: {kind: request, target: all, code: 503}",
		"inject: {kind: partition, target: 'idc:IDC-B'}",
		"wait: {until: detected}",
		"cutover: {from: IDC-A, to: IDC-B}",
		"cutover: {back: true}",
		"failover: {from: IDC-B, to: IDC-A}",
		"inject: {kind: kill, target: controller}",
		"resume:",
		"stopLoad:",
	)))
	if err != nil {
		t.Fatal(err)
	}
	want := drill.LabSpec{DB: "mariadb", Replication: "semi-sync", LeaseTTL: drill.Duration(2 * time.Second), EtcdMembers: 1, SlotCount: 256, Users: 200}
	if s.Lab != want {
		t.Errorf("lab %+v, want %+v", s.Lab, want)
	}
	st := s.Steps
	if l := *st[0].Load; l != (drill.LoadStep{Workers: 8, Mix: "payments"}) {
		t.Errorf("load %+v", l)
	}
	if f := st[1].Inject; f.Name != "partition-1" || !reflect.DeepEqual(f.Paths, drill.AllPaths) || f.For != 0 {
		t.Errorf("partition %+v", f)
	}
	if f := st[2].Inject; f.Name != "request-1" || f.Fraction != 1 || f.For != drill.DefaultRequestFor || f.Paths != nil {
		t.Errorf("request %+v", f)
	}
	if f := st[3].Inject; f.Name != "partition-2" {
		t.Errorf("second partition named %q", f.Name)
	}
	if w := st[4].Wait; w.Timeout != drill.DefaultWaitTimeout {
		t.Errorf("wait timeout %v", w.Timeout)
	}
	if c := *st[5].Cutover; c.Stages != "1/8,1" || c.Bake != drill.DefaultBake || c.ID != "cutover-1" {
		t.Errorf("cutover %+v", c)
	}
	if c := *st[6].Cutover; c.From != "IDC-B" || c.To != "IDC-A" || c.Stages != "" || c.ID != "cutover-2" {
		t.Errorf("cutover back %+v", c)
	}
	if f := *st[7].Failover; f.Window != drill.DefaultWindow {
		t.Errorf("failover %+v", f)
	}
	if r := *st[9].Resume; r.Timeout != drill.DefaultResumeTimeout {
		t.Errorf("resume %+v", r)
	}
	if st[10].StopLoad == nil {
		t.Error("stopLoad: without a value is not a stopLoad step")
	}
	if s.Expect != (drill.Expect{}) {
		t.Errorf("Validate filled the expect block: %+v", s.Expect)
	}

	// A sqlite lab's network faults leave replication out by default.
	s, err = drill.Parse("d", []byte(scenario("{db: sqlite}", "inject: {kind: reset, target: 'idc:IDC-A'}")))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Steps[0].Inject.Paths; !reflect.DeepEqual(got, []string{"etcd", "router", "db", "controller"}) {
		t.Errorf("sqlite paths %v", got)
	}
	if s.Lab.Replication != "" {
		t.Errorf("sqlite replication %q", s.Lab.Replication)
	}
}

func TestShortForms(t *testing.T) {
	tests := []struct {
		step string
		want drill.Step
	}{
		{"wait: 3s", drill.Step{Wait: &drill.WaitStep{For: drill.Duration(3 * time.Second)}}},
		{"wait: 1m30s", drill.Step{Wait: &drill.WaitStep{For: drill.Duration(90 * time.Second)}}},
		{"heal: all", drill.Step{Heal: &drill.HealStep{All: true}}},
		{"heal: k", drill.Step{Heal: &drill.HealStep{Name: "k"}}},
		{"heal: {name: k}", drill.Step{Heal: &drill.HealStep{Name: "k"}}},
		{"stopLoad:", drill.Step{StopLoad: &drill.StopLoadStep{}}},
		{"stopLoad: {}", drill.Step{StopLoad: &drill.StopLoadStep{}}},
		{"{name: 'x | y', stopLoad: null}", drill.Step{Name: "x | y", StopLoad: &drill.StopLoadStep{}}},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			// A load and a fault k before, so every step is valid.
			s, err := drill.Parse("s", []byte(scenario("", "load:", "inject: {name: k, kind: kill, target: router}", tt.step)))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Steps[2]; !reflect.DeepEqual(got, tt.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tt.want)
				t.Errorf("got %s, want %s", g, w)
			}
		})
	}
}

func TestStringFieldTakesNumber(t *testing.T) {
	s, err := drill.Parse("n", []byte(scenario("", "cutover: {from: 1, to: 2, stages: 1}")))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Steps[0].Cutover; c.From != "1" || c.To != "2" || c.Stages != "1" {
		t.Errorf("got %+v", c)
	}
}

// TestStepUnmarshalJSON covers the custom UnmarshalJSON methods, for code
// that reads steps with encoding/json rather than Parse.
func TestStepUnmarshalJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    drill.Step
		wantErr string
	}{
		{`{"wait":"3s"}`, drill.Step{Wait: &drill.WaitStep{For: drill.Duration(3 * time.Second)}}, ""},
		{`{"wait":{"until":"detected","timeout":"5s"}}`, drill.Step{Wait: &drill.WaitStep{Until: "detected", Timeout: drill.Duration(5 * time.Second)}}, ""},
		{`{"wait":{"untill":"detected"}}`, drill.Step{}, "unknown field"},
		{`{"wait":3}`, drill.Step{}, "no unit"},
		{`{"wait":true}`, drill.Step{}, "want a duration"},
		{`{"heal":"all"}`, drill.Step{Heal: &drill.HealStep{All: true}}, ""},
		{`{"heal":"k"}`, drill.Step{Heal: &drill.HealStep{Name: "k"}}, ""},
		{`{"heal":{"name":"k"}}`, drill.Step{Heal: &drill.HealStep{Name: "k"}}, ""},
		{`{"heal":{"nam":"k"}}`, drill.Step{}, "unknown field"},
		{`{"heal":""}`, drill.Step{}, "want \"all\""},
		{`{"heal":7}`, drill.Step{}, "want \"all\""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got drill.Step
			err := json.Unmarshal([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{`"2s"`, 2 * time.Second, ""},
		{`"150ms"`, 150 * time.Millisecond, ""},
		{`"1m30s"`, 90 * time.Second, ""},
		{`"0s"`, 0, ""},
		{`" 1h "`, time.Hour, ""},
		{`null`, 0, ""},
		{`2`, 0, "has no unit"},
		{`0`, 0, "has no unit"},
		{`"0"`, 0, "has no unit"},
		{`"1.5"`, 0, "has no unit"},
		{`-1`, 0, "has no unit"},
		{`"-1s"`, 0, "is negative"},
		{`"soon"`, 0, "is not valid"},
		{`""`, 0, "empty duration"},
		{`true`, 0, "want a duration"},
		{`{}`, 0, "want a duration"},
		{`"9999999999h"`, 0, "is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d drill.Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				if !errors.Is(err, drill.ErrBadDuration) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want ErrBadDuration saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || d.D() != tt.want {
				t.Fatalf("got %v, %v; want %v", d, err, tt.want)
			}
		})
	}
	for _, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Millisecond, 26 * time.Hour, 1<<63 - 1} {
		b, err := json.Marshal(drill.Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		var back drill.Duration
		if err := json.Unmarshal(b, &back); err != nil || back.D() != d {
			t.Errorf("%v: %s read back as %v, %v", d, b, back, err)
		}
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, kind, name string
		ok             bool
	}{
		{"idc:IDC-A", "idc", "IDC-A", true},
		{"cell:a1", "cell", "a1", true},
		{"db:IDC_B.2", "db", "IDC_B.2", true},
		{"etcd:leader", "etcd", "leader", true},
		{"etcd:2", "etcd", "2", true},
		{"router", "router", "", true},
		{"controller", "controller", "", true},
		{"all", "all", "", true},
		{"idc:", "", "", false},
		{"idc", "", "", false},
		{"idc:IDC A", "", "", false},
		{"idc:" + strings.Repeat("a", 64), "", "", false},
		{"etcd:02", "", "", false},
		{"etcd:-1", "", "", false},
		{"etcd:follower", "", "", false},
		{"router:1", "", "", false},
		{"host:x", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		kind, name, err := drill.ParseTarget(tt.in)
		if (err == nil) != tt.ok || kind != tt.kind || name != tt.name {
			t.Errorf("ParseTarget(%q) = %q, %q, %v", tt.in, kind, name, err)
		}
	}
}

func TestLabel(t *testing.T) {
	tests := []struct {
		step drill.Step
		kind string
		want string
	}{
		{drill.Step{Name: "warm up", Load: &drill.LoadStep{}}, "load", "warm up"},
		{drill.Step{Load: &drill.LoadStep{}}, "load", "load 8 workers"},
		{drill.Step{Load: &drill.LoadStep{Workers: 3, Rate: 12.5, Mix: "payments+bank"}}, "load", "load 3 workers, 12.5/s, payments+bank"},
		{drill.Step{StopLoad: &drill.StopLoadStep{}}, "stopLoad", "stop load"},
		{drill.Step{Wait: &drill.WaitStep{For: drill.Duration(time.Second)}}, "wait", "wait 1s"},
		{drill.Step{Wait: &drill.WaitStep{Until: "payments", Count: 50}}, "wait", "wait until payments 50"},
		{drill.Step{Wait: &drill.WaitStep{Until: "stage", Stage: 1}}, "wait", "wait until stage 1"},
		{drill.Step{Wait: &drill.WaitStep{Until: "cutover-step", Step: "flip"}}, "wait", "wait until cutover-step flip"},
		{drill.Step{Wait: &drill.WaitStep{Until: "recovered"}}, "wait", "wait until recovered"},
		{drill.Step{Inject: &drill.Fault{Kind: "kill", Target: "idc:IDC-A"}}, "inject", "inject kill idc:IDC-A"},
		{drill.Step{Inject: &drill.Fault{Kind: "latency", Target: "cell:a1", Latency: drill.Duration(time.Second)}}, "inject", "inject latency cell:a1 1s"},
		{drill.Step{Heal: &drill.HealStep{All: true}}, "heal", "heal all"},
		{drill.Step{Heal: &drill.HealStep{Name: "k"}}, "heal", "heal k"},
		{drill.Step{Cutover: &drill.CutoverStep{From: "A", To: "B"}}, "cutover", "cutover A -> B"},
		{drill.Step{Cutover: &drill.CutoverStep{Back: true, Background: true}}, "cutover", "cutover back (background)"},
		{drill.Step{Failover: &drill.FailoverStep{From: "A", To: "B", Background: true}}, "failover", "failover A -> B (background)"},
		{drill.Step{Resume: &drill.ResumeStep{}}, "resume", "resume"},
		{drill.Step{Expect: &drill.Expect{}}, "expect", "expect"},
		{drill.Step{}, "", "invalid step"},
		{drill.Step{Resume: &drill.ResumeStep{}, Expect: &drill.Expect{}}, "", "invalid step"},
	}
	for _, tt := range tests {
		if got := tt.step.Kind(); got != tt.kind {
			t.Errorf("Kind() = %q, want %q", got, tt.kind)
		}
		if got := tt.step.Label(); got != tt.want {
			t.Errorf("Label() = %q, want %q", got, tt.want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	e := drill.Expect{}.WithDefaults()
	if *e.MaxLost != 0 || *e.MaxDoubleAdmitted != 0 || *e.MaxFailed != -1 || !*e.MoneyConserved || !*e.Invariants {
		t.Errorf("defaults %+v", e)
	}
	three, no := 3, false
	in := drill.Expect{MaxLost: &three, Invariants: &no, Cutover: "done", MaxMTTR: drill.Duration(time.Second)}
	e = in.WithDefaults()
	if *e.MaxLost != 3 || *e.Invariants || e.Cutover != "done" || e.MaxMTTR != drill.Duration(time.Second) || *e.MaxFailed != -1 {
		t.Errorf("kept %+v", e)
	}
	*e.MaxLost = 9
	if three != 3 || e.MaxLost == in.MaxLost {
		t.Error("WithDefaults shares a pointer with its receiver")
	}
}

// TestValidateInCode checks a Scenario built in code: Validate fills the
// defaults, errors carry no file name, and a second Validate changes
// nothing.
func TestValidateInCode(t *testing.T) {
	s := &drill.Scenario{
		Name:        "in-code",
		Description: "built in Go",
		Steps: []drill.Step{
			{Inject: &drill.Fault{Kind: "kill", Target: "router"}},
			{Inject: &drill.Fault{Kind: "kill", Target: "controller"}},
			{Heal: &drill.HealStep{Name: "kill-2"}},
		},
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Steps[0].Inject.Name != "kill-1" || s.Lab.SlotCount != drill.DefaultSlotCount {
		t.Errorf("defaults not filled: %+v %+v", s.Steps[0].Inject, s.Lab)
	}
	checkStable(t, s)

	s.Steps = append(s.Steps, drill.Step{Load: &drill.LoadStep{Rate: -1}})
	err := s.Validate()
	var se *drill.ScenarioError
	if !errors.As(err, &se) || se.File != "" || se.Step != 3 || se.Field != "load.rate" {
		t.Fatalf("got %#v", err)
	}
	if got, want := err.Error(), "step 4 (load): rate -1: want operations per second >= 0 (0 = unbounded)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	_, err := drill.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, drill.ErrBadScenario) {
		t.Errorf("missing file: %v", err)
	}
	_, err = drill.Load("testdata/invalid.yaml") // its first document is a case
	var se *drill.ScenarioError
	if !errors.As(err, &se) || se.File != "testdata/invalid.yaml" {
		t.Errorf("got %v, want a *ScenarioError naming the path", err)
	}
}

func TestLimits(t *testing.T) {
	big := scenario("", "wait: 1s") + "# " + strings.Repeat("x", drill.MaxScenarioBytes) + "\n"
	if _, err := drill.Parse("big", []byte(big)); !errors.Is(err, drill.ErrBadScenario) || !strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized file: %v", err)
	}
	if _, err := drill.Parse("latin1", []byte("name: t\ndescription: caf\xe9\nsteps: [{wait: 1s}]\n")); !errors.Is(err, drill.ErrBadScenario) {
		t.Errorf("non-UTF-8 file: %v", err)
	}
	bomb := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	for c := 'b'; c <= 'k'; c++ {
		prev := string(c - 1)
		bomb += string(c) + ": &" + string(c) + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
	}
	if _, err := drill.Parse("bomb", []byte(bomb)); !errors.Is(err, drill.ErrBadScenario) {
		t.Errorf("alias bomb: %v", err)
	}
}

// The lab cannot create a map below the router's minimum slot count, so
// neither may a scenario ask for one.
func TestMinSlotCountIsTheRouters(t *testing.T) {
	if drill.MinSlotCount != router.MinSlotCount {
		t.Errorf("drill.MinSlotCount %d, router.MinSlotCount %d", drill.MinSlotCount, router.MinSlotCount)
	}
	if drill.MaxSlotCount > router.MaxSlotCount {
		t.Errorf("drill.MaxSlotCount %d above router.MaxSlotCount %d", drill.MaxSlotCount, router.MaxSlotCount)
	}
	if err := router.CheckSlotCount(drill.DefaultSlotCount); err != nil {
		t.Error(err)
	}
}
