package drill_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/chaos/drill"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func dur(d time.Duration) *drill.Duration { v := drill.Duration(d); return &v }

func ev(d time.Duration, kind, text string) drill.Event {
	return drill.Event{At: at(d), Offset: drill.Duration(d), Kind: kind, Text: text}
}

// fullReport has every section, failures included, and text that must be
// escaped in Markdown and XML.
func fullReport() *drill.Report {
	healed := at(9 * time.Second)
	r := &drill.Report{
		Scenario:    "kill-idc-a",
		Description: "Kill IDC-A under load, then fail over to IDC-B.\nAsync replication: <some> payments | may be *lost*.",
		File:        "chaos/scenarios/kill-idc-a.yaml",
		Pass:        false,
		Started:     t0,
		Finished:    at(20*time.Second + 250*time.Millisecond),
		Lab: drill.LabInfo{DB: "mariadb", Replication: "async", LeaseTTL: drill.Duration(2 * time.Second),
			FenceMargin: drill.Duration(500 * time.Millisecond), EtcdMembers: 3, Mover: "mysql-gtid", SlotCount: 256,
			Cells: []drill.CellInfo{{"a1", "IDC-A"}, {"a2", "IDC-A"}, {"b1", "IDC-B"}, {"b2", "IDC-B"}}},
		Timeline: []drill.Event{
			ev(0, drill.EventStep, "load 16 workers"),
			ev(3*time.Second, drill.EventStep, "inject kill idc:IDC-A"),
			ev(3*time.Second+2*time.Millisecond, drill.EventFault, "kill idc:IDC-A (a1, a2, db IDC-A)"),
			ev(4*time.Second+500*time.Millisecond, drill.EventDetect, "guards of a1 & a2 lost their leases <lease 2s>"),
			ev(5*time.Second, drill.EventCutover, "failover f-1 IDC-A -> IDC-B started"),
			ev(7*time.Second+120*time.Millisecond, drill.EventRecovered, "IDC-A's users served by b1, b2"),
			ev(9*time.Second, drill.EventHeal, "heal all: restarted a1, a2, db IDC-A"),
			ev(12*time.Second, drill.EventNote, "a note with a | pipe and a\nline break"),
			ev(15*time.Second, drill.EventError, "step 8 (wait): timed out after 5s"),
		},
		Faults: []drill.FaultRecord{
			{Name: "kill-1", Kind: "kill", Target: "idc:IDC-A", Injected: at(3*time.Second + 2*time.Millisecond), Healed: &healed,
				Detected: dur(1498 * time.Millisecond), Recovered: dur(4118 * time.Millisecond), Detail: "SIGKILL to 3 processes"},
			{Name: "slow", Kind: "latency", Target: "idc:IDC-B", Paths: []string{"db", "replication"}, Injected: at(10 * time.Second)},
		},
		Detect:   dur(1498 * time.Millisecond),
		MTTR:     dur(4118 * time.Millisecond),
		MTTRNote: "until the load's error rate fell below 1% for 2s",
		RPO: drill.RPO{Lost: 2, LostAmount: 1234 + 99, Note: "async replication: the last 2 payments acknowledged by a1 never reached IDC-B",
			Missing: []drill.LostOp{
				{Op: "pay", RequestID: "r1-pay-u17-301", Owner: "u17", Amount: 1234, Cell: "a1", At: at(2*time.Second + 990*time.Millisecond)},
				{Op: "refund", RequestID: "r1-refund-u_3-302", Owner: "u_3", Amount: 99, Cell: "a1", At: at(2*time.Second + 995*time.Millisecond)},
			}},
		Load: drill.LoadSummary{Payments: 3210, Failed: 12, Retries: 140, Declined: 3, Throughput: 160.5,
			P50: drill.Duration(12 * time.Millisecond), P99: drill.Duration(840*time.Millisecond + 400*time.Microsecond), Max: drill.Duration(3 * time.Second),
			RetriedBy: map[string]int{"503": 100, "network": 30, "409": 10}},
		Invariants: []drill.Invariant{
			{Name: "every acknowledged payment exists exactly once, at the cell that owns it", OK: false, Count: 7,
				Detail:     "3210 acknowledged payments and refunds checked",
				Violations: []string{"pay r1-pay-u17-301 of u17 (12.34) is in no cell's books", "v2", "v3", "v4", "v5"}},
			{Name: "no order was paid twice", OK: true, Detail: "3100 paid orders"},
			{Name: "money is conserved", OK: false, Count: 1, Detail: "bank in 1.00, out 0.00", Violations: []string{"the books hold 98 cents; the bank took in 100"}},
		},
		Checks: []drill.Check{
			{Name: "lost", Want: "<= 0", Got: "2", OK: false},
			{Name: "double admitted", Want: "<= 0", Got: "0", OK: true},
			{Name: "MTTR", Want: "<= 15s", Got: "4.118s", OK: true},
			{Name: "cutover", Want: "done", Got: "done", OK: true},
		},
		Cutovers: []drill.CutoverInfo{
			{ID: "f-1", Kind: "failover", From: "IDC-A", To: "IDC-B", Status: "done",
				Windows: []drill.Duration{drill.Duration(2100 * time.Millisecond)}, Started: at(5 * time.Second), Ended: at(7 * time.Second)},
			{ID: "cutover-2", Kind: "cutover", From: "IDC-B", To: "IDC-A", Status: "rolled-back", Reason: "gate: error rate 3% > 1%",
				Windows: []drill.Duration{drill.Duration(40 * time.Millisecond), drill.Duration(180 * time.Millisecond), 0}, Started: at(16 * time.Second), Ended: at(19 * time.Second)},
		},
		Errors: []string{"step 8 (wait): timed out after 5s waiting until payments 500"},
	}
	for s := 0; s < 20; s++ {
		p := drill.Point{Offset: drill.Duration(time.Duration(s) * time.Second), OK: 160 + s%3}
		switch {
		case s >= 3 && s < 5:
			p.OK, p.Failed, p.Retries = 40, 5, 60
		case s >= 5 && s < 7:
			p.OK, p.Retries = 90, 10
		case s == 12:
			p.Declined = 3
		}
		r.Series = append(r.Series, p)
	}
	return r
}

// emptyReport is a drill that ran no load and injected nothing.
func emptyReport() *drill.Report {
	return &drill.Report{
		Scenario: "empty", Description: "Nothing at all.", Pass: true, Started: t0, Finished: at(1500 * time.Millisecond),
		Lab: drill.LabInfo{DB: "sqlite", LeaseTTL: drill.Duration(2 * time.Second), EtcdMembers: 1, Mover: "copy", SlotCount: 256},
	}
}

// longReport has 1000 seconds of load, with gaps, and many markers.
func longReport() *drill.Report {
	r := &drill.Report{Scenario: "soak", Description: "A long soak with a fault every 100s.", Pass: true, Started: t0, Finished: at(1000 * time.Second),
		Lab:  drill.LabInfo{DB: "mariadb", Replication: "semi-sync", LeaseTTL: drill.Duration(2 * time.Second), EtcdMembers: 1, Mover: "mysql-gtid", SlotCount: 1024},
		Load: drill.LoadSummary{Payments: 500000, Throughput: 500}}
	for s := 0; s < 1000; s++ {
		if s >= 500 && s < 510 {
			continue // the generator was stopped
		}
		ok := 400 + (s*37)%200
		p := drill.Point{Offset: drill.Duration(time.Duration(s) * time.Second), OK: ok, Retries: (s * 13) % 7}
		if s%100 == 50 {
			p.OK, p.Failed, p.Retries = 10, 50, 300
		}
		r.Series = append(r.Series, p)
	}
	for s := 50; s < 1000; s += 100 {
		d := time.Duration(s) * time.Second
		r.Timeline = append(r.Timeline, ev(d, drill.EventFault, "pulse db:IDC-A"), ev(d+2*time.Second, drill.EventHeal, "heal pulse"))
	}
	return r
}

var reports = []struct {
	name string
	r    func() *drill.Report
}{{"full", fullReport}, {"empty", emptyReport}, {"long", longReport}}

func TestReportGolden(t *testing.T) {
	for _, tt := range reports {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r()
			var md, js, svg bytes.Buffer
			if err := r.WriteMarkdown(&md, tt.name+".svg"); err != nil {
				t.Fatal(err)
			}
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			if err := r.WriteSVG(&svg); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "report")
			golden(t, filepath.Join(dir, tt.name+".md"), md.Bytes())
			golden(t, filepath.Join(dir, tt.name+".json"), js.Bytes())
			golden(t, filepath.Join(dir, tt.name+".svg"), svg.Bytes())
			golden(t, filepath.Join(dir, tt.name+".summary.txt"), []byte(r.Summary()))
		})
	}
}

// TestSVGWellFormed parses every chart as XML and checks that it holds
// the series and one marker per fault, heal, detect and recovered event.
func TestSVGWellFormed(t *testing.T) {
	for _, tt := range reports {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r()
			var b bytes.Buffer
			if err := r.WriteSVG(&b); err != nil {
				t.Fatal(err)
			}
			dec := xml.NewDecoder(&b)
			paths, dashed, texts := 0, 0, ""
			for {
				tok, err := dec.Token()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("not well-formed XML: %v", err)
				}
				switch el := tok.(type) {
				case xml.StartElement:
					if el.Name.Local == "path" {
						paths++
					}
					for _, a := range el.Attr {
						if a.Name.Local == "stroke-dasharray" {
							dashed++
						}
					}
				case xml.CharData:
					texts += string(el)
				}
			}
			markers := 0
			for _, e := range r.Timeline {
				switch e.Kind {
				case drill.EventFault, drill.EventHeal, drill.EventDetect, drill.EventRecovered:
					markers++
				}
			}
			if want := markers + 4; dashed != want { // + 4 legend samples
				t.Errorf("%d dashed lines, want %d", dashed, want)
			}
			if len(r.Series) > 0 && paths != 2 || len(r.Series) == 0 && paths != 0 {
				t.Errorf("%d paths for %d points", paths, len(r.Series))
			}
			if len(r.Series) == 0 && !strings.Contains(texts, "no load was running") {
				t.Error("an empty chart does not say so")
			}
			if tt.name == "full" && !strings.Contains(texts, "guards of a1 & a2 lost their leases <lease 2s>") {
				t.Error("marker text lost in escaping")
			}
		})
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	for _, tt := range reports {
		r := tt.r()
		var b bytes.Buffer
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		var back drill.Report
		if err := json.Unmarshal(b.Bytes(), &back); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !reflect.DeepEqual(r, &back) {
			t.Errorf("%s: the report changed through JSON", tt.name)
		}
	}
}

// TestMarkdownIsUTC: the same instants in another time zone render the
// same report.
func TestMarkdownIsUTC(t *testing.T) {
	r := fullReport()
	var utc bytes.Buffer
	if err := r.WriteMarkdown(&utc, "c.svg"); err != nil {
		t.Fatal(err)
	}
	loc := time.FixedZone("UTC+9", 9*3600)
	r.Started, r.Finished = r.Started.In(loc), r.Finished.In(loc)
	for i := range r.RPO.Missing {
		r.RPO.Missing[i].At = r.RPO.Missing[i].At.In(loc)
	}
	var other bytes.Buffer
	if err := r.WriteMarkdown(&other, "c.svg"); err != nil {
		t.Fatal(err)
	}
	if utc.String() != other.String() {
		t.Errorf("the report depends on the time zone:\n%s", firstDiff(utc.String(), other.String()))
	}
}

func TestMarkdownSections(t *testing.T) {
	var b bytes.Buffer
	if err := fullReport().WriteMarkdown(&b, "kill idc (1).svg"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# Drill kill-idc-a: FAIL",
		"| r1-pay-u17-301 | pay | u17 | 12.34 | a1 | 10:00:02.990 (+2.990s) |", // every missing payment named
		"r1-refund-u\\_3-302",
		"![Acknowledged payments, failures and retries per second, with the faults](kill%20idc%20%281%29.svg)",
		"| 12.000s | note | a note with a \\| pipe and a line break |",
		"40ms, 180ms, 0s (longest 180ms)",
		"- ✗ every acknowledged payment exists exactly once, at the cell that owns it: 3210 acknowledged payments and refunds checked (7 violations, the first 5 below)",
		"- ✓ no order was paid twice: 3100 paid orders",
		"| ✗ | lost | \\<= 0 | 2 |",
		"## Errors",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q", want)
		}
	}
	b.Reset()
	if err := fullReport().WriteMarkdown(&b, ""); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "![") {
		t.Error("a chart link without a chart")
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reports", "run-1")
	r := fullReport()
	paths, err := r.WriteFiles(dir, "kill-idc-a")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "kill-idc-a.md"), filepath.Join(dir, "kill-idc-a.json"), filepath.Join(dir, "kill-idc-a.svg")}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	var md, js, svg bytes.Buffer
	_ = r.WriteMarkdown(&md, "kill-idc-a.svg")
	_ = r.WriteJSON(&js)
	_ = r.WriteSVG(&svg)
	for i, w := range [][]byte{md.Bytes(), js.Bytes(), svg.Bytes()} {
		got, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s differs from what the writer renders", paths[i])
		}
	}
	for _, base := range []string{"", "a/b", ".", ".."} {
		if _, err := r.WriteFiles(dir, base); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}
}

func TestSummary(t *testing.T) {
	s := fullReport().Summary()
	for _, want := range []string{
		"FAIL kill-idc-a: 3 of 4 checks passed in 20.25s\n",
		"time to detect 1.498s, MTTR 4.118s (until the load's error rate fell below 1% for 2s)",
		"RPO: 2 acknowledged operations lost (13.33 in all)",
		"FAILED check lost: want <= 0, got 2",
		"FAILED invariant: money is conserved (1 violation)",
		"error: step 8 (wait): timed out",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the summary lacks %q:\n%s", want, s)
		}
	}
	if s := emptyReport().Summary(); !strings.HasPrefix(s, "PASS empty in 1.5s\n") || !strings.Contains(s, "MTTR not measured") {
		t.Errorf("empty summary:\n%s", s)
	}
}
