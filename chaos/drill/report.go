package drill

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Report is the result of a drill run. The runner fills it; the writers
// here render it as JSON, Markdown and an SVG chart, deterministically.
type Report struct {
	Scenario    string        `json:"scenario"`
	Description string        `json:"description"`
	File        string        `json:"file,omitempty"`
	Pass        bool          `json:"pass"`
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished"`
	Lab         LabInfo       `json:"lab"`
	Timeline    []Event       `json:"timeline"`
	Series      []Point       `json:"series"` // one per second of load
	Faults      []FaultRecord `json:"faults"`
	// Detect is the time from the first fault to the first detection.
	Detect *Duration `json:"timeToDetect,omitempty"`
	// MTTR is the time from the first fault until the affected users
	// were served again; MTTRNote says how it was measured.
	MTTR       *Duration     `json:"mttr,omitempty"`
	MTTRNote   string        `json:"mttrNote,omitempty"`
	RPO        RPO           `json:"rpo"`
	Load       LoadSummary   `json:"load"`
	Invariants []Invariant   `json:"invariants"`
	Checks     []Check       `json:"checks"` // the Expect results
	Cutovers   []CutoverInfo `json:"cutovers"`
	Errors     []string      `json:"errors,omitempty"` // steps that failed to run
}

// LabInfo is the lab a drill ran in.
type LabInfo struct {
	DB          string     `json:"db"`
	Replication string     `json:"replication,omitempty"`
	LeaseTTL    Duration   `json:"leaseTTL"`
	FenceMargin Duration   `json:"fenceMargin"`
	EtcdMembers int        `json:"etcdMembers"`
	Mover       string     `json:"mover"`
	SlotCount   int        `json:"slotCount"`
	Cells       []CellInfo `json:"cells"`
}

// CellInfo is one cell of the lab.
type CellInfo struct {
	ID  string `json:"id"`
	IDC string `json:"idc"`
}

// Event kinds of a timeline.
const (
	EventStep      = "step"
	EventFault     = "fault"
	EventHeal      = "heal"
	EventDetect    = "detect"
	EventRecovered = "recovered"
	EventCutover   = "cutover"
	EventNote      = "note"
	EventError     = "error"
)

// Event is one line of the timeline.
type Event struct {
	At     time.Time `json:"at"`
	Offset Duration  `json:"offset"` // since Started
	// Kind is "step", "fault", "heal", "detect", "recovered", "cutover",
	// "note" or "error".
	Kind string `json:"kind"`
	Text string `json:"text"`
}

// Point is one second of load.
type Point struct {
	Offset   Duration `json:"offset"` // start of the second, since Started
	OK       int      `json:"ok"`     // acknowledged payments
	Failed   int      `json:"failed"`
	Retries  int      `json:"retries"`
	Declined int      `json:"declined"`
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Name     string     `json:"name"`
	Kind     string     `json:"kind"`
	Target   string     `json:"target"`
	Paths    []string   `json:"paths,omitempty"`
	Injected time.Time  `json:"injected"`
	Healed   *time.Time `json:"healed,omitempty"`
	// Detected and Recovered are measured from the injection.
	Detected  *Duration `json:"detected,omitempty"`
	Recovered *Duration `json:"recovered,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// RPO is what acknowledged work was lost.
type RPO struct {
	Lost       int      `json:"lost"`              // acknowledged operations missing afterwards
	LostAmount int64    `json:"lostAmount"`        // cents
	Missing    []LostOp `json:"missing,omitempty"` // every one: the report names them
	Note       string   `json:"note,omitempty"`
}

// LostOp is an acknowledged operation missing from the books.
type LostOp struct {
	Op        string    `json:"op"`
	RequestID string    `json:"requestId"`
	Owner     string    `json:"owner"`
	Amount    int64     `json:"amount"` // cents
	Cell      string    `json:"cell"`   // the cell that acknowledged it
	At        time.Time `json:"at"`     // when it was acknowledged
}

// LoadSummary sums up the load generator's run.
type LoadSummary struct {
	Payments   int            `json:"payments"`
	Failed     int            `json:"failed"`
	Retries    int            `json:"retries"`
	Declined   int            `json:"declined"`
	Throughput float64        `json:"throughput"` // acknowledged payments per second
	P50        Duration       `json:"p50"`
	P99        Duration       `json:"p99"`
	Max        Duration       `json:"max"`
	RetriedBy  map[string]int `json:"retriedBy,omitempty"` // reason -> retries
}

// Invariant is one checked property of the books (lab/books.Invariant).
type Invariant struct {
	Name       string   `json:"name"`
	OK         bool     `json:"ok"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations,omitempty"` // the first few
	Count      int      `json:"count"`                // all violations
}

// Check is one expectation and how it came out.
type Check struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	OK   bool   `json:"ok"`
}

// CutoverInfo is one cutover or failover of the drill.
type CutoverInfo struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"` // "cutover" or "failover"
	From   string `json:"from"`
	To     string `json:"to"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Windows are the write-unavailable windows of the stages, in order.
	Windows []Duration `json:"windows"`
	Started time.Time  `json:"started"`
	Ended   time.Time  `json:"ended"`
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("drill: report: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// WriteFiles writes dir/base.md, dir/base.json and dir/base.svg (the
// Markdown links the chart by its relative name), creating dir, and
// returns their paths in that order.
func (r *Report) WriteFiles(dir, base string) (paths []string, err error) {
	if base == "" || base != filepath.Base(base) || base == "." || base == ".." {
		return nil, fmt.Errorf("drill: report file base name %q: want a file name without a directory", base)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("drill: report: %w", err)
	}
	chart := base + ".svg"
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{base + ".md", func(w io.Writer) error { return r.WriteMarkdown(w, chart) }},
		{base + ".json", r.WriteJSON},
		{chart, r.WriteSVG},
	}
	for _, f := range files {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return paths, err
		}
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return paths, fmt.Errorf("drill: report: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Summary returns a few lines for a terminal: PASS or FAIL, time to detect
// and MTTR, RPO, load, and whatever failed.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", passFail(r.Pass), r.Scenario)
	if n := len(r.Checks); n > 0 {
		fmt.Fprintf(&b, ": %d of %d checks passed", countOK(r.Checks), n)
	}
	if !r.Started.IsZero() && !r.Finished.IsZero() {
		fmt.Fprintf(&b, " in %s", fmtDur(Duration(r.Finished.Sub(r.Started))))
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "  time to detect %s, MTTR %s", optDur(r.Detect), optDur(r.MTTR))
	if r.MTTR != nil && r.MTTRNote != "" {
		fmt.Fprintf(&b, " (%s)", oneLine(r.MTTRNote))
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "  RPO: %s\n", rpoText(r.RPO))
	l := r.Load
	fmt.Fprintf(&b, "  load: %d payments (%s/s), %d failed, %d retries, %d declined; p99 %s\n",
		l.Payments, fmtFloat(l.Throughput, 1), l.Failed, l.Retries, l.Declined, fmtDur(l.P99))
	for _, c := range r.Checks {
		if !c.OK {
			fmt.Fprintf(&b, "  FAILED check %s: want %s, got %s\n", oneLine(c.Name), oneLine(c.Want), oneLine(c.Got))
		}
	}
	for _, inv := range r.Invariants {
		if !inv.OK {
			fmt.Fprintf(&b, "  FAILED invariant: %s (%s)\n", oneLine(inv.Name), plural(inv.Count, "violation", "violations"))
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error: %s\n", oneLine(e))
	}
	return b.String()
}

func passFail(pass bool) string {
	if pass {
		return "PASS"
	}
	return "FAIL"
}

func countOK(cs []Check) int {
	n := 0
	for _, c := range cs {
		if c.OK {
			n++
		}
	}
	return n
}

func rpoText(r RPO) string {
	switch r.Lost {
	case 0:
		return "no acknowledged operation lost"
	case 1:
		return fmt.Sprintf("1 acknowledged operation lost (%s)", cents(r.LostAmount))
	}
	return fmt.Sprintf("%d acknowledged operations lost (%s in all)", r.Lost, cents(r.LostAmount))
}

// fmtDur renders a duration to the millisecond (finer below 1ms).
func fmtDur(d Duration) string {
	t := time.Duration(d)
	if t >= time.Millisecond || t <= -time.Millisecond {
		t = t.Round(time.Millisecond)
	}
	return t.String()
}

func optDur(d *Duration) string {
	if d == nil {
		return "not measured"
	}
	return fmtDur(*d)
}

// fmtOffset renders an offset as seconds with milliseconds: "12.345s".
func fmtOffset(d Duration) string {
	return fmt.Sprintf("%.3fs", time.Duration(d).Seconds())
}

func fmtFloat(f float64, prec int) string {
	return fmt.Sprintf("%.*f", prec, f)
}

// cents renders an amount in cents as "12.34".
func cents(c int64) string {
	sign := ""
	u := uint64(c)
	if c < 0 {
		sign, u = "-", uint64(-c)
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}
