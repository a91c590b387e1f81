package drill

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxViolationsShown bounds the violations listed per invariant.
const maxViolationsShown = 5

// WriteMarkdown writes the report as Markdown. chart is the path of the
// SVG chart relative to the Markdown file ("" = no chart). Times are in
// UTC and the output depends on nothing but r, so reports diff cleanly.
func (r *Report) WriteMarkdown(w io.Writer, chart string) error {
	var buf bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) }

	p("# Drill %s: %s\n\n", mdText(r.Scenario), passFail(r.Pass))
	if d := strings.TrimSpace(r.Description); d != "" {
		for _, line := range strings.Split(d, "\n") {
			p(">%s\n", strings.TrimRight(" "+mdLine(line), " "))
		}
		p("\n")
	}
	p("| | |\n|---|---|\n")
	p("| Result | **%s**", passFail(r.Pass))
	if n := len(r.Checks); n > 0 {
		p(": %d of %d checks passed", countOK(r.Checks), n)
	}
	p(" |\n")
	if r.File != "" {
		p("| Scenario file | `%s` |\n", mdCode(r.File))
	}
	p("| Started | %s |\n", fmtTime(r.Started))
	p("| Finished | %s", fmtTime(r.Finished))
	if !r.Started.IsZero() && !r.Finished.IsZero() {
		p(" (after %s)", fmtDur(Duration(r.Finished.Sub(r.Started))))
	}
	p(" |\n\n")

	// Lab.
	l := r.Lab
	p("## Lab\n\n| Setting | Value |\n|---|---|\n")
	db := orNone(l.DB)
	if l.Replication != "" {
		db += ", " + l.Replication + " replication"
	}
	p("| Database | %s |\n", mdText(db))
	p("| Lease TTL | %s (fencing margin %s) |\n", fmtDur(l.LeaseTTL), fmtDur(l.FenceMargin))
	p("| etcd members | %d |\n", l.EtcdMembers)
	p("| Data mover | %s |\n", mdText(orNone(l.Mover)))
	p("| Slots | %d |\n", l.SlotCount)
	var cells []string
	for _, c := range l.Cells {
		cells = append(cells, fmt.Sprintf("%s (%s)", c.ID, c.IDC))
	}
	p("| Cells | %s |\n\n", mdText(orNone(strings.Join(cells, ", "))))

	// Headline figures.
	p("## Headline figures\n\n| Figure | Value |\n|---|---|\n")
	p("| Time to detect | %s |\n", optDur(r.Detect))
	p("| MTTR | %s", optDur(r.MTTR))
	if r.MTTRNote != "" {
		p(" (%s)", mdText(r.MTTRNote))
	}
	p(" |\n")
	p("| RPO | %s |\n\n", rpoText(r.RPO))
	if len(r.RPO.Missing) > 0 || r.RPO.Note != "" {
		p("### At risk\n\n")
		if n := len(r.RPO.Missing); n > 0 {
			p("The %s below %s acknowledged to the user but %s missing from the books afterwards:\n\n",
				plural(n, "operation", "operations"), pick(n, "was", "were"), pick(n, "is", "are"))
			p("| Request ID | Op | Owner | Amount | Cell | Acknowledged |\n|---|---|---|---:|---|---|\n")
			for _, m := range r.RPO.Missing {
				p("| %s | %s | %s | %s | %s | %s (%s) |\n", mdText(m.RequestID), mdText(m.Op), mdText(m.Owner),
					cents(m.Amount), mdText(m.Cell), fmtClock(m.At), r.offsetOf(m.At))
			}
			p("\n")
		}
		if r.RPO.Note != "" {
			p("%s\n\n", mdText(r.RPO.Note))
		}
	}

	// Load.
	ld := r.Load
	p("## Load\n\n")
	p("| Payments | Failed | Retries | Declined | Throughput | p50 | p99 | Max |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	p("| %d | %d | %d | %d | %s/s | %s | %s | %s |\n\n", ld.Payments, ld.Failed, ld.Retries, ld.Declined,
		fmtFloat(ld.Throughput, 1), fmtDur(ld.P50), fmtDur(ld.P99), fmtDur(ld.Max))
	if len(ld.RetriedBy) > 0 {
		var parts []string
		for _, k := range sortedKeys(ld.RetriedBy) {
			parts = append(parts, fmt.Sprintf("%s: %d", mdText(k), ld.RetriedBy[k]))
		}
		p("Retries by reason: %s.\n\n", strings.Join(parts, ", "))
	}
	if chart != "" {
		p("![Acknowledged payments, failures and retries per second, with the faults](%s)\n\n", mdLink(chart))
	}

	// Timeline.
	p("## Timeline\n\n")
	if len(r.Timeline) == 0 {
		p("Nothing happened.\n\n")
	} else {
		p("| Offset | Kind | Event |\n|---:|---|---|\n")
		for _, e := range r.Timeline {
			p("| %s | %s | %s |\n", fmtOffset(e.Offset), mdText(e.Kind), mdText(e.Text))
		}
		p("\n")
	}

	// Faults.
	p("## Faults\n\n")
	if len(r.Faults) == 0 {
		p("No faults were injected.\n\n")
	} else {
		p("| Name | Kind | Target | Paths | Injected | Healed | Detected after | Recovered after | Detail |\n|---|---|---|---|---:|---:|---:|---:|---|\n")
		for _, f := range r.Faults {
			healed := "never"
			if f.Healed != nil {
				healed = r.offsetOf(*f.Healed)
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", mdText(f.Name), mdText(f.Kind), mdText(f.Target),
				mdText(strings.Join(f.Paths, ", ")), r.offsetOf(f.Injected), healed,
				optDurDash(f.Detected), optDurDash(f.Recovered), mdText(f.Detail))
		}
		p("\n")
	}

	// Cutovers.
	p("## Cutovers\n\n")
	if len(r.Cutovers) == 0 {
		p("No cutover or failover ran.\n\n")
	} else {
		p("| ID | Kind | From → To | Status | Started | Took | Write-unavailable windows | Reason |\n|---|---|---|---|---:|---:|---|---|\n")
		for _, c := range r.Cutovers {
			took := "-"
			if !c.Started.IsZero() && !c.Ended.IsZero() {
				took = fmtDur(Duration(c.Ended.Sub(c.Started)))
			}
			p("| %s | %s | %s → %s | %s | %s | %s | %s | %s |\n", mdText(c.ID), mdText(c.Kind), mdText(c.From), mdText(c.To),
				mdText(c.Status), r.offsetOf(c.Started), took, windowsText(c.Windows), mdText(c.Reason))
		}
		p("\n")
	}

	// Invariants.
	p("## Invariants\n\n")
	if len(r.Invariants) == 0 {
		p("The books were not checked.\n\n")
	} else {
		for _, inv := range r.Invariants {
			mark := "✓"
			if !inv.OK {
				mark = "✗"
			}
			p("- %s %s", mark, mdText(inv.Name))
			if inv.Detail != "" {
				p(": %s", mdText(inv.Detail))
			}
			if !inv.OK {
				p(" (%s", plural(inv.Count, "violation", "violations"))
				if shown := min(len(inv.Violations), maxViolationsShown); shown > 0 && shown < inv.Count {
					p(", the first %d below", shown)
				}
				p(")")
			}
			p("\n")
			for _, v := range inv.Violations[:min(len(inv.Violations), maxViolationsShown)] {
				p("  - %s\n", mdText(v))
			}
		}
		p("\n")
	}

	// Checks.
	p("## Checks\n\n")
	if len(r.Checks) == 0 {
		p("Nothing was expected.\n\n")
	} else {
		p("| | Check | Want | Got |\n|---|---|---|---|\n")
		for _, c := range r.Checks {
			mark := "✓"
			if !c.OK {
				mark = "✗"
			}
			p("| %s | %s | %s | %s |\n", mark, mdText(c.Name), mdText(c.Want), mdText(c.Got))
		}
		p("\n")
	}

	// Errors.
	if len(r.Errors) > 0 {
		p("## Errors\n\n")
		for _, e := range r.Errors {
			p("- %s\n", mdText(e))
		}
		p("\n")
	}
	out := append(bytes.TrimRight(buf.Bytes(), "\n"), '\n')
	_, err := w.Write(out)
	return err
}

// offsetOf renders t as an offset since the start ("+3.120s"), or "-".
func (r *Report) offsetOf(t time.Time) string {
	if t.IsZero() || r.Started.IsZero() {
		return "-"
	}
	return "+" + fmtOffset(Duration(t.Sub(r.Started)))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func fmtClock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("15:04:05.000")
}

func optDurDash(d *Duration) string {
	if d == nil {
		return "-"
	}
	return fmtDur(*d)
}

func windowsText(ws []Duration) string {
	if len(ws) == 0 {
		return "-"
	}
	parts := make([]string, len(ws))
	longest := ws[0]
	for i, w := range ws {
		parts[i] = fmtDur(w)
		longest = max(longest, w)
	}
	out := strings.Join(parts, ", ")
	if len(ws) > 1 {
		out += " (longest " + fmtDur(longest) + ")"
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	return strconv.Itoa(n) + " " + pick(n, one, many)
}

func pick(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// mdText makes s safe in a Markdown table cell or list item: one line,
// pipes escaped, HTML and emphasis characters defused.
func mdText(s string) string {
	var b strings.Builder
	for i, r := range oneLineKeep(s) {
		switch r {
		case '|', '\\', '*', '_', '`', '[', ']', '<':
			b.WriteByte('\\')
		case '>', '#', '-', '+':
			if i == 0 { // a quote, heading or list item at the start of a list item
				b.WriteByte('\\')
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mdLine is mdText for a line of the description.
func mdLine(s string) string { return mdText(s) }

// mdCode makes s safe inside a single-backtick code span in a table.
func mdCode(s string) string {
	s = oneLineKeep(s)
	s = strings.ReplaceAll(s, "`", "'")
	return strings.ReplaceAll(s, "|", "\\|")
}

// mdLink makes a relative path safe as a Markdown link target.
func mdLink(s string) string {
	r := strings.NewReplacer(" ", "%20", "(", "%28", ")", "%29", "<", "%3C", ">", "%3E", "\n", "", "\r", "")
	return r.Replace(s)
}

// oneLineKeep replaces line breaks and other control characters by spaces,
// keeping the rest as it is.
func oneLineKeep(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}
