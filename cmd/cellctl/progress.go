package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cellkit/cellkit/failover"
)

// progressView shows a cutover runner's progress reports as they come.
// The runner may report from two goroutines at once (its main loop and the
// wait it is performing), so views lock.
type progressView interface {
	// show renders one report.
	show(p failover.Progress)
	// done ends the rendering: a live status line is cleared.
	done()
}

// Progress kinds (failover.Progress.Kind).
const (
	kindStep    = "step"
	kindBarrier = "barrier"
	kindData    = "data"
	kindGate    = "gate"
	kindCommand = "command"
	kindRetry   = "retry"
	kindEnd     = "end"
)

// pipeEvery is how often a pipe gets a barrier or gate line while one
// step goes on: enough to follow in a log, not a flood.
const pipeEvery = time.Second

// newProgressView picks the view for the output format and stdout: a JSON
// or YAML event stream, a live status line on a terminal, plain lines in a
// pipe.
func (a *app) newProgressView() progressView {
	switch a.output {
	case "json":
		return &jsonView{w: a.stdout}
	case "yaml":
		return &yamlView{w: a.stdout}
	}
	if a.isTerminal() {
		return &ttyView{w: a.stdout, width: a.termWidth()}
	}
	return &lineView{w: a.stdout, every: pipeEvery}
}

// isTerminal reports whether stdout is a terminal that understands
// carriage return and erase-line (not TERM=dumb).
func (a *app) isTerminal() bool {
	f, ok := a.stdout.(*os.File)
	if !ok {
		return false
	}
	if term, _ := a.env("TERM"); term == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// termWidth is the width the status line must fit in: $COLUMNS, else 80.
func (a *app) termWidth() int {
	if v, ok := a.env("COLUMNS"); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 20 {
			return n
		}
	}
	return 80
}

// --- lines: pipes, and the permanent lines of a terminal ---

// progressLine is one report as one line of text:
//
//	03:15:02.120  stage 3/6 1/8  barrier  acks 5/6 of epoch 12 · frozen 0.42s · pending b1/i3@11
func progressLine(p failover.Progress) string {
	var parts []string
	msg := p.Message
	if p.Kind == kindEnd {
		msg = strings.TrimSuffix(string(p.Status)+": "+msg, ": ")
	}
	if msg != "" {
		parts = append(parts, msg)
	}
	if p.FrozenFor > 0 {
		parts = append(parts, "frozen "+seconds(p.FrozenFor))
	}
	if b := p.Barrier; b != nil && len(b.Pending) > 0 {
		parts = append(parts, "pending "+listSome(b.Pending, 3))
		if b.LeaseLeft > 0 {
			parts = append(parts, "their leases expire in ≤"+b.LeaseLeft.String())
		}
	}
	if g := passingGates(p.Gates); g != "" && !strings.HasPrefix(p.Message, "gate failed") {
		parts = append(parts, g)
	}
	return fmt.Sprintf("%s  %s  %s  %s", p.At.UTC().Format("15:04:05.000"), stageLabel(p), p.Step, strings.Join(parts, " · "))
}

func stageLabel(p failover.Progress) string {
	return fmt.Sprintf("stage %d/%d %s", p.Stage, p.Stages, p.StageName)
}

// seconds renders a short duration as "0.42s".
func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// listSome lists up to n items and counts the rest.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// passingGates names the gates of a check with their verdicts ("probe pass").
func passingGates(gs []failover.GateResult) string {
	var out []string
	for _, g := range gs {
		v := "pass"
		if !g.OK {
			v = "FAIL"
		}
		out = append(out, g.Gate+" "+v)
	}
	return strings.Join(out, ", ")
}

// lineView writes one line per report, with no escape codes: for pipes and
// log files. Barrier and gate reports, which come several times a second,
// are thinned to one line per `every` while a step lasts.
type lineView struct {
	mu    sync.Mutex
	w     io.Writer
	every time.Duration

	lastKey string    // stage, step and kind of the last thinned line
	lastAt  time.Time // when it was reported
}

func (v *lineView) show(p failover.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.Kind == kindBarrier || p.Kind == kindGate {
		key := fmt.Sprintf("%d/%s/%s", p.Stage, p.Step, p.Kind)
		if key == v.lastKey && p.At.Sub(v.lastAt) < v.every {
			return
		}
		v.lastKey, v.lastAt = key, p.At
	} else {
		v.lastKey = ""
	}
	fmt.Fprintln(v.w, progressLine(p))
}

func (v *lineView) done() {}

// --- terminal ---

// ttyView keeps a status line at the bottom of a terminal, redrawn in place
// as reports come:
//
//	stage 3/6 1/8 · barrier · frozen 0.42s · acks 5/6 · gates: probe pass
//
// Steps, data-gate results, commands and the end are written above it as
// permanent lines, the same as in a pipe.
type ttyView struct {
	mu    sync.Mutex
	w     io.Writer
	width int

	cur     failover.Progress
	barrier *failover.Barrier // the last barrier report of the current step
	gates   []failover.GateResult
	bake    string // the last gate report's message, shown when there are no gates
	drawn   bool   // a status line is on screen
}

// Terminal control: back to column 0 and erase the line.
const clearLine = "\r\x1b[K"

func (v *ttyView) show(p failover.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.Stage != v.cur.Stage || p.Step != v.cur.Step || p.StageName != v.cur.StageName {
		v.barrier, v.gates, v.bake = nil, nil, ""
	}
	v.cur = p
	if p.Barrier != nil {
		v.barrier = p.Barrier
	}
	if p.Gates != nil {
		v.gates = p.Gates
	}
	if p.Kind == kindGate {
		v.bake = p.Message
	}
	var b strings.Builder
	if v.drawn {
		b.WriteString(clearLine)
		v.drawn = false
	}
	switch p.Kind {
	case kindStep, kindData, kindCommand, kindRetry, kindEnd:
		b.WriteString(progressLine(p))
		b.WriteString("\n")
	}
	if p.Kind != kindEnd {
		b.WriteString(truncate(v.statusLine(), v.width-1))
		v.drawn = true
	}
	io.WriteString(v.w, b.String())
}

// statusLine is the live line for the latest reports.
func (v *ttyView) statusLine() string {
	p := v.cur
	parts := []string{stageLabel(p), string(p.Step)}
	if p.FrozenFor > 0 {
		parts = append(parts, "frozen "+seconds(p.FrozenFor))
	}
	if b := v.barrier; b != nil {
		parts = append(parts, fmt.Sprintf("acks %d/%d", b.Acked, b.Expected))
		if n := len(b.Pending); n > 0 && b.LeaseLeft > 0 {
			parts = append(parts, fmt.Sprintf("%s expire in ≤%s", plural(n, "lease", "leases"), b.LeaseLeft))
		}
	}
	if g := passingGates(v.gates); g != "" {
		parts = append(parts, "gates: "+g)
	} else if v.bake != "" {
		parts = append(parts, v.bake)
	}
	return strings.Join(parts, " · ")
}

func (v *ttyView) done() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.drawn {
		io.WriteString(v.w, clearLine)
		v.drawn = false
	}
}

// truncate cuts s to n runes, so a status line never wraps (a wrapped line
// cannot be redrawn in place).
func truncate(s string, n int) string {
	r := []rune(s)
	if n <= 1 || len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// --- event streams ---

// jsonView writes each report as one JSON object on its own line (the
// failover.Progress fields; durations in nanoseconds).
type jsonView struct {
	mu sync.Mutex
	w  io.Writer
}

func (v *jsonView) show(p failover.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	b, err := json.Marshal(p)
	if err != nil {
		return
	}
	v.w.Write(append(b, '\n'))
}

func (v *jsonView) done() {}

// yamlView writes each report as a YAML document of a stream.
type yamlView struct {
	mu sync.Mutex
	w  io.Writer
}

func (v *yamlView) show(p failover.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	b, err := yaml.Marshal(p)
	if err != nil {
		return
	}
	io.WriteString(v.w, "---\n")
	v.w.Write(b)
}

func (v *yamlView) done() {}
