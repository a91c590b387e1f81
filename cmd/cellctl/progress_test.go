package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/failover"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata/ from what the tests render")

// progressScript is a fixed run of one emergency stage and one planned
// stage, as a runner reports it: every kind of report, barrier reports
// several times a second with a lease countdown, a gate that passes then
// fails, an operator command, the end.
func progressScript() []failover.Progress {
	t0 := time.Date(2026, 11, 21, 3, 15, 2, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	base := func(ms int, kind string, step failover.StepName, msg string) failover.Progress {
		return failover.Progress{At: at(ms), Cutover: "failover-20261121-031502-9f3a", Kind: kind, Status: failover.StatusRunning,
			Stage: 1, Stages: 2, StageName: "1/8", Step: step, Message: msg}
	}
	frozen := func(p failover.Progress, d time.Duration) failover.Progress { p.FrozenFor = d; return p }
	barrier := func(ms int, acked, expected int, pending []string, left time.Duration) failover.Progress {
		p := frozen(base(ms, kindBarrier, failover.StepBarrier, ""), time.Duration(ms-100)*time.Millisecond)
		p.Message = fmt.Sprintf("acks %d/%d of epoch 12", acked, expected)
		p.Barrier = &failover.Barrier{Epoch: 12, Acked: acked, Expected: expected, Pending: pending, LeaseLeft: left}
		return p
	}
	gate := func(ms int, ok bool, msg string) failover.Progress {
		p := base(ms, kindGate, failover.StepVerify, msg)
		p.Gates = []failover.GateResult{{Gate: "probe", OK: ok, Value: 0, Detail: "8 probes served"}}
		if !ok {
			p.Gates[0].Value, p.Gates[0].Detail = 2, "2 of 8 probes failed"
		}
		return p
	}
	pending := []string{"a1/i1@11", "a1/i2@11", "a2/i1@11", "a2/i2@11"}
	end := base(4900, kindEnd, failover.StepHold, "stage 1/8 done; waiting for resume")
	end.Status, end.Stage, end.StageName = failover.StatusWaiting, 2, "1"
	return []failover.Progress{
		base(0, kindStep, failover.StepFreeze, "start"),
		base(1, kindStep, failover.StepFreeze, "freeze: 64 slots, 0 keys"),
		frozen(base(100, kindStep, failover.StepBarrier, "map at epoch 12"), 0),
		barrier(350, 2, 6, pending, 5*time.Second),
		barrier(600, 2, 6, pending, 5*time.Second),
		barrier(850, 2, 6, pending, 4*time.Second),
		barrier(1100, 2, 6, pending, 4*time.Second),
		barrier(1350, 2, 6, pending, 3*time.Second),
		barrier(2400, 2, 2, nil, 0),
		frozen(base(2401, kindStep, failover.StepData, "every live guard acked"), 2301*time.Millisecond),
		frozen(base(2402, kindData, failover.StepData, "none: stateless: nothing to move"), 2302*time.Millisecond),
		frozen(base(2403, kindStep, failover.StepFlip, "data gate passed"), 2303*time.Millisecond),
		frozen(base(2404, kindStep, failover.StepFlip, "flip: 64 slots, 0 keys"), 2304*time.Millisecond),
		base(2420, kindStep, failover.StepVerify, "map at epoch 13"),
		gate(2430, true, "gates hold, 2.0s of bake left"),
		gate(2930, true, "gates hold, 1.5s of bake left"),
		base(3000, kindCommand, failover.StepVerify, "pause requested by alice; the cutover stops after this stage"),
		gate(3430, true, "gates hold, 1.0s of bake left"),
		gate(4430, false, "gate failed: probe FAIL (2): 2 of 8 probes failed"),
		end,
	}
}

// visible shows a terminal's control characters in a golden file.
var visible = strings.NewReplacer("\r", "<CR>", "\x1b[K", "<EL>")

// TestProgressViews renders the script in every view and compares with
// testdata/progress-*.txt (go test -run TestProgressViews -rewrite).
func TestProgressViews(t *testing.T) {
	t.Parallel()
	tests := []struct {
		golden string
		view   func(*bytes.Buffer) progressView
		show   func(string) string
	}{
		{"progress-lines.txt", func(b *bytes.Buffer) progressView { return &lineView{w: b, every: pipeEvery} }, nil},
		{"progress-tty.txt", func(b *bytes.Buffer) progressView { return &ttyView{w: b, width: 80} }, func(s string) string {
			// One line per write: each redraw starts at <CR>.
			return strings.ReplaceAll(visible.Replace(s), "<CR><EL>", "\n<CR><EL>")
		}},
		{"progress-json.txt", func(b *bytes.Buffer) progressView { return &jsonView{w: b} }, nil},
		{"progress-yaml.txt", func(b *bytes.Buffer) progressView { return &yamlView{w: b} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var b bytes.Buffer
			v := tt.view(&b)
			for _, p := range progressScript() {
				v.show(p)
			}
			v.done()
			got := b.String()
			if tt.show != nil {
				got = tt.show(got)
			}
			path := filepath.Join("testdata", tt.golden)
			if *rewrite {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -rewrite to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (rerun with -rewrite if the change is intended):\n--- got\n%s\n--- want\n%s", tt.golden, got, want)
			}
		})
	}
}

// TestProgressPipe: in a pipe, barrier and gate reports are thinned to one
// line a second per step, and nothing else is dropped.
func TestProgressPipe(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	v := &lineView{w: &b, every: pipeEvery}
	script := progressScript()
	for _, p := range script {
		v.show(p)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	count := map[string]int{}
	for _, p := range script {
		count[p.Kind]++
	}
	var barriers, gates, others int
	for _, l := range lines {
		switch {
		case strings.Contains(l, "acks "):
			barriers++
		case strings.Contains(l, "gates hold") || strings.Contains(l, "gate failed"):
			gates++
		default:
			others++
		}
	}
	if others != len(script)-count[kindBarrier]-count[kindGate] {
		t.Errorf("%d step/data/command/end lines, want every one of %d", others, len(script)-count[kindBarrier]-count[kindGate])
	}
	// Barrier reports at 0.35, 0.6, 0.85, 1.1, 1.35, 2.4s: lines at 0.35, 1.35, 2.4.
	if barriers != 3 {
		t.Errorf("%d barrier lines, want 3:\n%s", barriers, b.String())
	}
	// Gates at 2.43, 2.93, (command), 3.43, 4.43: the command line resets
	// the thinning, so 2.43, 3.43, 4.43.
	if gates != 3 {
		t.Errorf("%d gate lines, want 3:\n%s", gates, b.String())
	}
	if strings.ContainsAny(b.String(), "\r\x1b") {
		t.Errorf("escape codes in a pipe: %q", b.String())
	}
}

// TestProgressTTYWidth: the status line never wraps.
func TestProgressTTYWidth(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	v := &ttyView{w: &b, width: 40}
	for _, p := range progressScript() {
		v.show(p)
	}
	for _, seg := range strings.Split(b.String(), clearLine) {
		status := seg[strings.LastIndex(seg, "\n")+1:]
		if n := len([]rune(status)); n > 39 {
			t.Errorf("status line of %d runes on a 40-column terminal: %q", n, status)
		}
	}
}

// TestProgressJSONStream: start -o json streams one Progress per line.
func TestProgressJSONStream(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	r := c.must(startArgs("--reason", "json", "--auto", "--stages", "1/2,1", "-o", "json")...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	kinds := map[string]int{}
	for _, l := range lines {
		var p failover.Progress
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("line %q is not a Progress: %v", l, err)
		}
		kinds[p.Kind]++
	}
	last := decodeJSON[failover.Progress](t, lines[len(lines)-1])
	if last.Kind != kindEnd || last.Status != failover.StatusDone || kinds[kindStep] == 0 || kinds[kindBarrier] == 0 || kinds[kindGate] == 0 {
		t.Errorf("event kinds %v, last %+v", kinds, last)
	}
}

func TestExpandProbeURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ tmpl, key, want string }{
		{"http://r:8080/probe/{key}", "u42", "http://r:8080/probe/u42"},
		{"http://r:8080/probe/{key}", "a b/c", "http://r:8080/probe/a%20b%2Fc"},
		{"http://r:8080/probe?user={key}&n=1", "a b&c", "http://r:8080/probe?user=a+b%26c&n=1"},
		{"http://r/{key}/x?k={key}", "a/b", "http://r/a%2Fb/x?k=a%2Fb"},
	}
	for _, tt := range tests {
		if got := expandProbeURL(tt.tmpl, tt.key); got != tt.want {
			t.Errorf("expandProbeURL(%q, %q) = %q, want %q", tt.tmpl, tt.key, got, tt.want)
		}
	}
}
