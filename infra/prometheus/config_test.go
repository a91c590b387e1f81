package prometheus_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/prometheus"
)

func TestNewGateValidates(t *testing.T) {
	good := prometheus.Config{URL: "http://127.0.0.1:9090", Query: "up", Op: prometheus.GE, Threshold: 1}
	cases := []struct {
		name  string
		edit  func(*prometheus.Config)
		field string // "" when valid
		why   string
	}{
		{"valid", func(*prometheus.Config) {}, "", ""},
		{"https with prefix", func(c *prometheus.Config) { c.URL = "https://obs.example.com/prom/" }, "", ""},
		{"zero threshold", func(c *prometheus.Config) { c.Threshold = 0 }, "", ""},
		{"empty URL", func(c *prometheus.Config) { c.URL = "" }, "URL", "empty"},
		{"no scheme", func(c *prometheus.Config) { c.URL = "127.0.0.1:9090" }, "URL", "http"},
		{"ftp", func(c *prometheus.Config) { c.URL = "ftp://host" }, "URL", "http:// or https://"},
		{"no host", func(c *prometheus.Config) { c.URL = "http:///api" }, "URL", "no host"},
		{"port only", func(c *prometheus.Config) { c.URL = "http://:9090" }, "URL", "no host"},
		{"query string", func(c *prometheus.Config) { c.URL = "http://h:9090/?x=1" }, "URL", "without a query"},
		{"bad port", func(c *prometheus.Config) { c.URL = "http://h:99999" }, "URL", "port"},
		{"unparsable", func(c *prometheus.Config) { c.URL = "http://h:9090/%zz" }, "URL", "does not parse"},
		{"empty query", func(c *prometheus.Config) { c.Query = "  " }, "Query", "empty"},
		{"no op", func(c *prometheus.Config) { c.Op = "" }, "Op", "want one of"},
		{"bad op", func(c *prometheus.Config) { c.Op = "=" }, "Op", "want one of"},
		{"NaN", func(c *prometheus.Config) { c.Threshold = math.NaN() }, "Threshold", "finite"},
		{"Inf", func(c *prometheus.Config) { c.Threshold = math.Inf(-1) }, "Threshold", "finite"},
		{"negative timeout", func(c *prometheus.Config) { c.Timeout = -time.Second }, "Timeout", "positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			g, err := prometheus.NewGate(cfg)
			if c.field == "" {
				if err != nil {
					t.Fatalf("NewGate: %v", err)
				}
				t.Cleanup(g.CloseIdleConnections)
				if got := g.Config().Timeout; got != prometheus.DefaultTimeout {
					t.Errorf("Timeout = %v, want the default %v", got, prometheus.DefaultTimeout)
				}
				if got, want := g.Name(), cfg.Spec(); got != want {
					t.Errorf("Name = %q, want the spec %q", got, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewGate(%+v) = nil error, want one about %s", cfg, c.field)
			}
			var ce *prometheus.ConfigError
			if !errors.As(err, &ce) || ce.Field != c.field || !errors.Is(err, prometheus.ErrBadConfig) {
				t.Fatalf("NewGate: %v (%T), want a *ConfigError for %s wrapping ErrBadConfig", err, err, c.field)
			}
			if !strings.Contains(err.Error(), c.why) {
				t.Errorf("NewGate: %q does not say %q", err, c.why)
			}
		})
	}
}

func TestURLPasswordRedacted(t *testing.T) {
	for _, u := range []string{"ftp://alice:s3cret@h", "http://alice:s3cret@h:9090/%zz"} {
		_, err := prometheus.NewGate(prometheus.Config{URL: u, Query: "up", Op: prometheus.LT, Threshold: 1})
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("NewGate(URL %q): %v, want an error without the password", u, err)
		}
	}
}
