package prometheus_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/infra/prometheus"
)

func TestParseSpec(t *testing.T) {
	ok := []struct {
		spec  string
		query string
		op    prometheus.Op
		thr   float64
	}{
		{"sum(rate(http_errors_total[1m])) < 0.01", "sum(rate(http_errors_total[1m]))", prometheus.LT, 0.01},
		{"x<=1", "x", prometheus.LE, 1},
		{"  up  >  0  ", "up", prometheus.GT, 0},
		{"up >= 1", "up", prometheus.GE, 1},
		{"up == 1", "up", prometheus.EQ, 1},
		{"up != 0", "up", prometheus.NE, 0},
		{"x > -1.5", "x", prometheus.GT, -1.5},
		{"x < +2", "x", prometheus.LT, 2},
		{"x <= -1e-3", "x", prometheus.LE, -0.001},
		{"x < 0x10", "x", prometheus.LT, 16},
		{"x < 1_000", "x", prometheus.LT, 1000},
		// Comparisons inside the query stay in the query.
		{"rate(x[1m]) > 0 < 5", "rate(x[1m]) > 0", prometheus.LT, 5},
		{"count(x > 0) >= 3", "count(x > 0)", prometheus.GE, 3},
		{`sum(rate(http_requests_total{code!="200",path=~"/a<b"}[5m])) < 0.01`, `sum(rate(http_requests_total{code!="200",path=~"/a<b"}[5m]))`, prometheus.LT, 0.01},
		{`x{a='<1'} < 2`, `x{a='<1'}`, prometheus.LT, 2},
		{"label_replace(x, \"a\", \"<\", \"b\", `>`) > 1", "label_replace(x, \"a\", \"<\", \"b\", `>`)", prometheus.GT, 1},
		{`x{a="q\"<"} > 1`, `x{a="q\"<"}`, prometheus.GT, 1},
		// The rightmost operator followed by a number wins, not the rightmost operator.
		{"a > bool 1 == 1", "a > bool 1", prometheus.EQ, 1},
		{"x >= 1 or on() vector(0) < 3", "x >= 1 or on() vector(0)", prometheus.LT, 3},
		{"histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) > 0.25", "histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))", prometheus.GT, 0.25},
		{"x\n<\n1", "x", prometheus.LT, 1},
	}
	for _, c := range ok {
		cfg, err := prometheus.ParseSpec(c.spec)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", c.spec, err)
			continue
		}
		if cfg.Query != c.query || cfg.Op != c.op || cfg.Threshold != c.thr {
			t.Errorf("ParseSpec(%q) = %q %q %v, want %q %q %v", c.spec, cfg.Query, cfg.Op, cfg.Threshold, c.query, c.op, c.thr)
		}
	}

	bad := []struct{ spec, why string }{
		{"", "no comparison operator"},
		{"up", "no comparison operator"},
		{"sum(x > 1)", "no comparison operator"},
		{`x{a="<1"}`, "no comparison operator"},
		{"< 1", "no query"},
		{"x <", "no threshold"},
		{"x < y", `threshold "y" is not a number`},
		{"x < 1 and y > z", `threshold "z" is not a number`},
		{"x < 1 # note", "comment"},
		{"x < NaN", "not a finite number"},
		{"x < Inf", "not a finite number"},
		{"x < 1e999", "not a finite number"},
		{"x < 1ms", "not a number"},
		{"sum(x < 1", "never closed"},
		{"sum(x)) < 1", "unbalanced"},
		{"x[1m) < 1", "unbalanced"},
		{`x{a="b} < 1`, "does not end"},
		{"x = 1", "no comparison operator"},
		{"x =~ 1", "no comparison operator"},
	}
	for _, c := range bad {
		cfg, err := prometheus.ParseSpec(c.spec)
		if err == nil {
			t.Errorf("ParseSpec(%q) = %+v, want an error about %q", c.spec, cfg, c.why)
			continue
		}
		if !errors.Is(err, prometheus.ErrBadSpec) {
			t.Errorf("ParseSpec(%q): %v is not ErrBadSpec", c.spec, err)
		}
		var se *prometheus.SpecError
		if !errors.As(err, &se) || se.Spec != c.spec {
			t.Errorf("ParseSpec(%q): %v is not a *SpecError naming the spec", c.spec, err)
		}
		if !strings.Contains(err.Error(), c.why) {
			t.Errorf("ParseSpec(%q): %q does not say %q", c.spec, err, c.why)
		}
	}
}

// FuzzParseSpec checks that ParseSpec never panics, that what it accepts
// is a usable condition, and that Config.Spec reads back to the same one.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"sum(rate(http_errors_total[1m])) < 0.01",
		"rate(x[1m]) > 0 < 5",
		`x{a="q\"<"} > 1`,
		"label_replace(x, \"a\", \"<\", \"b\", `>`) > 1",
		"x<==1", "x != -0x1p-2", "a > bool 1 == 1", "(x) >= 1e3", "x < 1 # c",
		"sum(x)) < 1", `x{a="b} < 1`, "x\n<\n1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		cfg, err := prometheus.ParseSpec(spec)
		if err != nil {
			if !errors.Is(err, prometheus.ErrBadSpec) {
				t.Fatalf("ParseSpec(%q): error %v is not ErrBadSpec", spec, err)
			}
			return
		}
		if cfg.Query == "" || cfg.Query != strings.TrimSpace(cfg.Query) {
			t.Fatalf("ParseSpec(%q): query %q is empty or untrimmed", spec, cfg.Query)
		}
		if !cfg.Op.Valid() {
			t.Fatalf("ParseSpec(%q): op %q", spec, cfg.Op)
		}
		if math.IsNaN(cfg.Threshold) || math.IsInf(cfg.Threshold, 0) {
			t.Fatalf("ParseSpec(%q): threshold %v", spec, cfg.Threshold)
		}
		if !strings.Contains(spec, cfg.Query) {
			t.Fatalf("ParseSpec(%q): query %q is not from the spec", spec, cfg.Query)
		}
		again, err := prometheus.ParseSpec(cfg.Spec())
		if err != nil {
			t.Fatalf("ParseSpec(%q) = %q, which does not parse again: %v", spec, cfg.Spec(), err)
		}
		if again.Query != cfg.Query || again.Op != cfg.Op || again.Threshold != cfg.Threshold {
			t.Fatalf("ParseSpec(%q) = %q, which parses to %q", spec, cfg.Spec(), again.Spec())
		}
		cfg.URL = "http://127.0.0.1:9090"
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseSpec(%q) gives a config that does not validate: %v", spec, err)
		}
	})
}
