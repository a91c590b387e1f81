package prometheus

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds one check when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// ErrBadConfig is wrapped by every configuration error (a *ConfigError).
var ErrBadConfig = errors.New("bad prometheus gate configuration")

// ConfigError names the field of a Config that is wrong and why.
// errors.Is(err, ErrBadConfig) holds.
type ConfigError struct {
	Field  string // "URL", "Query", "Op", "Threshold", "Timeout"
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("prometheus: Config.%s: %s", e.Field, e.Reason)
}

func (e *ConfigError) Unwrap() error { return ErrBadConfig }

// Op is a comparison between a sample and the threshold.
type Op string

// The comparison operators, spelled as in PromQL.
const (
	LT Op = "<"
	LE Op = "<="
	GT Op = ">"
	GE Op = ">="
	EQ Op = "=="
	NE Op = "!="
)

// ops lists the operators longest first, the order a scanner must try them.
var ops = []Op{LE, GE, EQ, NE, LT, GT}

// Valid reports whether o is one of the six operators.
func (o Op) Valid() bool {
	switch o {
	case LT, LE, GT, GE, EQ, NE:
		return true
	}
	return false
}

// Holds reports whether `v o threshold` is true. NaN holds for no operator,
// not even !=: a sample that is not a number cannot show the system is
// healthy.
func (o Op) Holds(v, threshold float64) bool {
	if math.IsNaN(v) || math.IsNaN(threshold) {
		return false
	}
	switch o {
	case LT:
		return v < threshold
	case LE:
		return v <= threshold
	case GT:
		return v > threshold
	case GE:
		return v >= threshold
	case EQ:
		return v == threshold
	case NE:
		return v != threshold
	}
	return false
}

// badness orders samples by how badly they sit against the threshold:
// the sample with the highest badness is the worst one, and it breaks the
// threshold if any sample does. NaN is worse than everything.
func (o Op) badness(v, threshold float64) float64 {
	if math.IsNaN(v) {
		return math.Inf(1)
	}
	switch o {
	case LT, LE:
		return v
	case GT, GE:
		return -v
	case EQ:
		return math.Abs(v - threshold)
	case NE:
		return -math.Abs(v - threshold)
	}
	return 0
}

// Config configures one Prometheus gate. Zero values mean the defaults.
type Config struct {
	// URL is the base URL of the Prometheus server: scheme, host, port and
	// the path prefix it is served under, if any
	// ("http://prometheus.monitoring:9090", "https://obs.example.com/prom").
	// The gate queries URL + "/api/v1/query". Required; http or https.
	// User info in the URL is sent as basic auth and redacted in messages.
	URL string
	// Query is the PromQL expression, evaluated as an instant query at the
	// server's current time on every check. It must return an instant
	// vector or a scalar. Required.
	Query string
	// Op and Threshold make the condition: a check passes when
	// `sample Op Threshold` holds for every sample of the result. Op is
	// required. Threshold must be finite; zero is a threshold like any
	// other, not a default.
	Op        Op
	Threshold float64
	// PassOnEmpty makes a result with no samples pass. By default it
	// fails: a query that matches nothing is as likely a typo or a target
	// that is not scraped as good news. Set it for error-rate queries such
	// as sum(rate(http_errors_total[1m])), which return nothing while there
	// are no errors.
	PassOnEmpty bool
	// Timeout bounds one check: the HTTP request, and the query's
	// evaluation on the server (sent as the API's timeout parameter).
	// Default DefaultTimeout (5s).
	Timeout time.Duration
	// Name names the gate in results and progress reports. Default the
	// spec, "<Query> <Op> <Threshold>".
	Name string
	// Client sends the requests (custom TLS, proxies). Default a client
	// with a transport of the gate's own (see Gate.CloseIdleConnections).
	Client *http.Client
}

// Spec is the condition in the form ParseSpec reads:
// "<Query> <Op> <Threshold>".
func (c Config) Spec() string {
	return strings.TrimSpace(c.Query) + " " + string(c.Op) + " " + formatFloat(c.Threshold)
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Name == "" {
		c.Name = c.Spec()
	}
}

// Validate checks the fields (after defaults). Every error is a
// *ConfigError.
func (c Config) Validate() error {
	c.setDefaults()
	if _, err := parseBaseURL(c.URL); err != nil {
		return err
	}
	if strings.TrimSpace(c.Query) == "" {
		return &ConfigError{Field: "Query", Reason: "empty; want a PromQL expression"}
	}
	if !c.Op.Valid() {
		return &ConfigError{Field: "Op", Reason: fmt.Sprintf("%q; want one of < <= > >= == !=", string(c.Op))}
	}
	if math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0) {
		return &ConfigError{Field: "Threshold", Reason: fmt.Sprintf("%v; want a finite number", c.Threshold)}
	}
	if c.Timeout < 0 {
		return &ConfigError{Field: "Timeout", Reason: fmt.Sprintf("%v; want a positive duration (0 means %v)", c.Timeout, DefaultTimeout)}
	}
	return nil
}

// parseBaseURL checks a server's base URL and returns it without a
// trailing slash.
func parseBaseURL(raw string) (*url.URL, error) {
	bad := func(reason string) error {
		shown := raw
		if u, err := url.Parse(raw); err == nil {
			shown = u.Redacted()
		}
		return &ConfigError{Field: "URL", Reason: fmt.Sprintf("%q: %s", shown, reason)}
	}
	if raw == "" {
		return nil, &ConfigError{Field: "URL", Reason: `empty; want the Prometheus server's base URL ("http://host:9090")`}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the input, password and all; keep the reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, &ConfigError{Field: "URL", Reason: fmt.Sprintf(`does not parse (%v); want "http://host:9090"`, err)}
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad("want an http:// or https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("no host")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, bad("want a base URL without a query or fragment; the gate adds /api/v1/query")
	case u.Opaque != "":
		return nil, bad("want scheme://host[:port][/prefix]")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, bad("port out of range")
		}
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// formatFloat prints a number the way Prometheus and Go literals do
// ("0.01", "1e+06", "NaN", "+Inf").
func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
