package drill

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Chart geometry, in SVG user units.
const (
	svgW      = 960
	svgH      = 420
	plotLeft  = 64
	plotRight = svgW - 24
	plotTop   = 56
	plotBot   = svgH - 110
)

// Chart colors.
const (
	colorOK        = "#3182bd"
	colorOKFill    = "#9ecae1"
	colorFailed    = "#d62728"
	colorFault     = "#6a3d9a"
	colorHeal      = "#33a02c"
	colorDetect    = "#ff7f00"
	colorRecovered = "#444444"
	colorGrid      = "#e5e5e5"
	colorAxis      = "#333333"
)

var markerColor = map[string]string{
	EventFault: colorFault, EventHeal: colorHeal, EventDetect: colorDetect, EventRecovered: colorRecovered,
}

// WriteSVG writes the chart: acknowledged payments per second (blue area)
// and failed operations plus retries per second (red line) against seconds
// since the start, with a dashed vertical marker for every fault, heal,
// detection and recovery on the timeline. It is hand-written SVG and
// depends on nothing but r.
func (r *Report) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }

	// The x range covers the run, every point and every event.
	span := 1.0
	if !r.Started.IsZero() && r.Finished.After(r.Started) {
		span = math.Max(span, r.Finished.Sub(r.Started).Seconds())
	}
	for _, pt := range r.Series {
		span = math.Max(span, secs(pt.Offset)+1)
	}
	var markers []Event
	for _, e := range r.Timeline {
		if _, ok := markerColor[e.Kind]; ok {
			markers = append(markers, e)
			span = math.Max(span, secs(e.Offset))
		}
	}
	xStep := niceStep(span, 10)
	xMax := math.Ceil(span/xStep) * xStep

	yData := 0
	for _, pt := range r.Series {
		yData = max(yData, pt.OK, pt.Failed+pt.Retries)
	}
	yStep := niceStep(math.Max(float64(yData), 1), 5)
	yMax := math.Max(math.Ceil(float64(yData)/yStep)*yStep, yStep)

	x := func(s float64) float64 { return plotLeft + min(max(s, 0), xMax)/xMax*(plotRight-plotLeft) }
	y := func(v float64) float64 { return plotBot - v/yMax*(plotBot-plotTop) }

	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	title := fmt.Sprintf("Drill %s: %s", r.Scenario, passFail(r.Pass))
	p("<title>%s</title>\n", xmlText(title))
	p(`<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgW, svgH)
	p(`<text x="%d" y="28" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n", svgW/2, xmlText(title))

	// Grid, ticks and tick labels.
	p(`<g stroke="%s" stroke-width="1">`+"\n", colorGrid)
	for v := yStep; v <= yMax+yStep/2; v += yStep {
		p(`<line x1="%d" y1="%s" x2="%d" y2="%s"/>`+"\n", plotLeft, num(y(v)), plotRight, num(y(v)))
	}
	p("</g>\n")
	p(`<g font-size="11" fill="%s">`+"\n", colorAxis)
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		p(`<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="%s"/>`+"\n", plotLeft-5, num(y(v)), plotLeft, num(y(v)), colorAxis)
		p(`<text x="%d" y="%s" text-anchor="end">%s</text>`+"\n", plotLeft-8, num(y(v)+4), num(v))
	}
	for s := 0.0; s <= xMax+xStep/2; s += xStep {
		p(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s"/>`+"\n", num(x(s)), plotBot, num(x(s)), plotBot+5, colorAxis)
		p(`<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", num(x(s)), plotBot+18, num(s))
	}
	p("</g>\n")

	// Series.
	if len(r.Series) == 0 {
		p(`<text x="%d" y="%d" text-anchor="middle" fill="#888888">no load was running</text>`+"\n", (plotLeft+plotRight)/2, (plotTop+plotBot)/2)
	} else {
		var area, line bytes.Buffer
		for i, pt := range r.Series {
			x0, x1 := x(secs(pt.Offset)), x(secs(pt.Offset)+1)
			start := i == 0 || secs(r.Series[i-1].Offset)+1 != secs(pt.Offset)
			end := i == len(r.Series)-1 || secs(pt.Offset)+1 != secs(r.Series[i+1].Offset)
			if start {
				fmt.Fprintf(&area, "M%s %sV%s", num(x0), num(plotBot), num(y(float64(pt.OK))))
				fmt.Fprintf(&line, "M%s %s", num(x0), num(y(float64(pt.Failed+pt.Retries))))
			} else {
				fmt.Fprintf(&area, "V%s", num(y(float64(pt.OK))))
				fmt.Fprintf(&line, "V%s", num(y(float64(pt.Failed+pt.Retries))))
			}
			fmt.Fprintf(&area, "H%s", num(x1))
			fmt.Fprintf(&line, "H%s", num(x1))
			if end {
				fmt.Fprintf(&area, "V%sZ", num(plotBot))
			}
		}
		p(`<path d="%s" fill="%s" stroke="%s" stroke-width="1"/>`+"\n", area.String(), colorOKFill, colorOK)
		p(`<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", line.String(), colorFailed)
	}

	// Axes.
	p(`<g stroke="%s" stroke-width="1">`+"\n", colorAxis)
	p(`<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", plotLeft, plotBot, plotRight, plotBot)
	p(`<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", plotLeft, plotTop, plotLeft, plotBot)
	p("</g>\n")
	p(`<text x="%d" y="%d" text-anchor="middle">seconds since the start</text>`+"\n", (plotLeft+plotRight)/2, plotBot+38)
	p(`<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">operations per second</text>`+"\n", (plotTop+plotBot)/2)

	// Markers, labelled downwards from the top of the plot. A label that
	// would overlap the previous one is left out; its line keeps the text
	// as a tooltip.
	slices.SortStableFunc(markers, func(a, b Event) int { return cmp.Compare(a.Offset, b.Offset) })
	lastLabel := math.Inf(-1)
	for _, e := range markers {
		ex := x(secs(e.Offset))
		c := markerColor[e.Kind]
		label := e.Kind + ": " + e.Text
		p("<g>\n<title>%s</title>\n", xmlText(fmtOffset(e.Offset)+" "+label))
		p(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3"/>`+"\n", num(ex), plotTop, num(ex), plotBot, c)
		if ex-lastLabel >= 12 {
			p(`<text transform="translate(%s %d) rotate(90)" font-size="10" fill="%s" stroke="#ffffff" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
				num(ex+3), plotTop+4, c, xmlText(truncate(label, 48)))
			lastLabel = ex
		}
		p("</g>\n")
	}

	// Legend.
	ly := svgH - 30
	p(`<g font-size="11">` + "\n")
	lx := plotLeft
	p(`<rect x="%d" y="%d" width="14" height="10" fill="%s" stroke="%s"/>`+"\n", lx, ly-9, colorOKFill, colorOK)
	p(`<text x="%d" y="%d">acknowledged payments/s</text>`+"\n", lx+20, ly)
	lx += 190
	p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5"/>`+"\n", lx, ly-4, lx+14, ly-4, colorFailed)
	p(`<text x="%d" y="%d">failed + retries/s</text>`+"\n", lx+20, ly)
	lx += 140
	for _, k := range []string{EventFault, EventHeal, EventDetect, EventRecovered} {
		p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3"/>`+"\n", lx, ly-4, lx+14, ly-4, markerColor[k])
		p(`<text x="%d" y="%d">%s</text>`+"\n", lx+20, ly, k)
		lx += 100
	}
	p("</g>\n</svg>\n")
	return bw.Flush()
}

func secs(d Duration) float64 { return time.Duration(d).Seconds() }

// niceStep returns a step of 1, 2 or 5 times a power of ten that cuts span
// into at most n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 || math.IsNaN(span) || math.IsInf(span, 0) {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if s := m * mag; s >= raw {
			return math.Max(s, 1) // whole seconds and whole operations
		}
	}
	return math.Max(10*mag, 1)
}

// num renders a coordinate with at most one decimal.
func num(f float64) string {
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64)
}

func truncate(s string, n int) string {
	s = oneLineKeep(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// xmlText escapes s for XML text and attribute values; characters XML
// cannot hold become U+FFFD.
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder do not fail
	return b.String()
}
