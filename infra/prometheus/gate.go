package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/cellkit/cellkit/failover"
)

// Errors of Gate.Query. A Prometheus error answer is an *APIError.
var (
	// ErrUnreachable: no HTTP answer (connection refused, DNS, TLS, or
	// none within Config.Timeout).
	ErrUnreachable = errors.New("prometheus unreachable")
	// ErrBadResponse: a 2xx answer that is not a Prometheus query result.
	ErrBadResponse = errors.New("not a Prometheus query response")
	// ErrUnsupportedResult: the query returned a range vector (matrix) or
	// a string; a gate needs an instant vector or a scalar.
	ErrUnsupportedResult = errors.New("query result is not an instant vector or scalar")
)

// APIError is an answer that is not a success: a non-2xx status, or a
// body with "status":"error". Prometheus sets Type ("bad_data",
// "execution", "timeout", ...) and Message; another server (a proxy) leaves
// Type empty and Message holds the start of its body.
type APIError struct {
	StatusCode int
	Type       string
	Message    string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.StatusCode)
	if e.Type != "" {
		s += ": " + e.Type
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// maxBody caps the response read; a gate's query should return a handful
// of series, not megabytes.
const maxBody = 16 << 20

// Sample is one value of a query result. Metric is empty for a scalar and
// for an aggregation without grouping labels.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Result is one evaluation of the gate's query.
type Result struct {
	// Type is Prometheus's resultType: "vector" or "scalar".
	Type     string
	Samples  []Sample
	Warnings []string
}

// Gate checks a PromQL query against a threshold. Build it with NewGate;
// it is safe for concurrent use.
type Gate struct {
	cfg      Config
	endpoint *url.URL // base + /api/v1/query, without the query string
	shown    string   // the base URL, redacted, for messages
	client   *http.Client
}

var _ failover.Gate = (*Gate)(nil)

// NewGate validates cfg (see Config.Validate), fills in defaults and
// returns the gate.
func NewGate(cfg Config) (*Gate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	cfg.Query = strings.TrimSpace(cfg.Query)
	base, err := parseBaseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	g := &Gate{cfg: cfg, shown: base.Redacted(), client: cfg.Client}
	g.endpoint = base.JoinPath("api", "v1", "query")
	if g.client == nil {
		// A transport of its own, so CloseIdleConnections touches only
		// this gate's connections.
		tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
		if d, ok := http.DefaultTransport.(*http.Transport); ok {
			tr = d.Clone()
		}
		g.client = &http.Client{Transport: tr}
	}
	return g, nil
}

// Config returns the gate's configuration, defaults filled in.
func (g *Gate) Config() Config { return g.cfg }

// Name is Config.Name.
func (g *Gate) Name() string { return g.cfg.Name }

// CloseIdleConnections closes the idle keep-alive connections of the
// gate's client. The gate still works afterwards; call it when done with
// the gate so no connection goroutines stay behind.
func (g *Gate) CloseIdleConnections() { g.client.CloseIdleConnections() }

// Check evaluates the query once. It passes when the result is an instant
// vector or scalar and every sample satisfies the threshold (an empty
// result passes only with Config.PassOnEmpty); anything that prevents an
// answer fails it. Value is the worst sample, 0 when there is none; NaN
// and ±Inf, which JSON cannot carry, are reported as 0 and
// ±math.MaxFloat64, with the real value in Detail. The input is not used:
// the query is evaluated at the server's current time.
func (g *Gate) Check(ctx context.Context, _ failover.GateInput) failover.GateResult {
	res := failover.GateResult{Gate: g.Name()}
	r, err := g.Query(ctx)
	if err != nil {
		res.Detail = fmt.Sprintf("%s: cannot evaluate, failing closed: %v", g.cfg.Query, err)
		return res
	}
	warn := ""
	if len(r.Warnings) > 0 {
		warn = " (prometheus warnings: " + strings.Join(r.Warnings, "; ") + ")"
	}
	if len(r.Samples) == 0 {
		res.OK = g.cfg.PassOnEmpty
		if res.OK {
			res.Detail = fmt.Sprintf("%s: no samples; passes (PassOnEmpty)%s", g.cfg.Query, warn)
		} else {
			res.Detail = fmt.Sprintf("%s: no samples; an empty result fails (set PassOnEmpty if no series means healthy)%s", g.cfg.Query, warn)
		}
		return res
	}
	op, t := g.cfg.Op, g.cfg.Threshold
	worst, broken := 0, 0
	for i, s := range r.Samples {
		if !op.Holds(s.Value, t) {
			broken++
		}
		if op.badness(s.Value, t) > op.badness(r.Samples[worst].Value, t) {
			worst = i
		}
	}
	w := r.Samples[worst]
	res.OK = broken == 0
	res.Value = jsonSafe(w.Value)
	var b strings.Builder
	b.WriteString(g.seriesName(w.Metric))
	if math.IsNaN(w.Value) {
		fmt.Fprintf(&b, " = NaN, not a number: fails %s %s (threshold)", op, formatFloat(t))
	} else {
		fmt.Fprintf(&b, " = %s %s %s (threshold)", formatFloat(w.Value), relation(w.Value, t), formatFloat(t))
	}
	if n := len(r.Samples); n > 1 {
		if broken > 0 {
			fmt.Fprintf(&b, "; %d of %d series break %s %s", broken, n, op, formatFloat(t))
		} else {
			fmt.Fprintf(&b, "; all %d series hold", n)
		}
	}
	b.WriteString(warn)
	res.Detail = b.String()
	return res
}

// seriesName names a sample in Detail: the query for a scalar or an
// unlabelled aggregate, the series for a selector, and the query with
// the grouping labels otherwise.
func (g *Gate) seriesName(m map[string]string) string {
	if len(m) == 0 {
		return g.cfg.Query
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	if name, ok := m["__name__"]; ok {
		b.WriteString(name)
	} else {
		b.WriteString(g.cfg.Query)
		b.WriteByte(' ')
	}
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

// relation is how v actually stands to t.
func relation(v, t float64) string {
	switch {
	case v < t:
		return "<"
	case v > t:
		return ">"
	}
	return "=="
}

func jsonSafe(v float64) float64 {
	switch {
	case math.IsNaN(v):
		return 0
	case math.IsInf(v, 1):
		return math.MaxFloat64
	case math.IsInf(v, -1):
		return -math.MaxFloat64
	}
	return v
}

// Query evaluates the gate's query once (GET /api/v1/query) within
// Config.Timeout. Errors wrap ErrUnreachable, ErrBadResponse or
// ErrUnsupportedResult, are an *APIError, or are ctx's error; all name
// the server.
func (g *Gate) Query(ctx context.Context) (Result, error) {
	r, err := g.query(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("prometheus at %s: %w", g.shown, err)
	}
	return r, nil
}

func (g *Gate) query(parent context.Context) (Result, error) {
	ctx, cancel := context.WithTimeout(parent, g.cfg.Timeout)
	defer cancel()
	u := *g.endpoint
	u.RawQuery = url.Values{
		"query": {g.cfg.Query},
		// Stop the evaluation on the server too; the API reads a float
		// number of seconds.
		"timeout": {strconv.FormatFloat(g.cfg.Timeout.Seconds(), 'f', -1, 64)},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return Result{}, g.transportError(parent, ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return Result{}, g.transportError(parent, ctx, fmt.Errorf("reading the response: %w", err))
	}
	if len(body) > maxBody {
		return Result{}, fmt.Errorf("%w: response larger than %d MiB", ErrBadResponse, maxBody>>20)
	}
	return decode(resp.StatusCode, resp.Header.Get("Content-Type"), body)
}

// transportError explains a failed round trip: our timeout, the caller's
// cancellation, or the network.
func (g *Gate) transportError(parent, ctx context.Context, err error) error {
	if parent.Err() != nil {
		return fmt.Errorf("check interrupted: %w", parent.Err())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no answer within %v", ErrUnreachable, g.cfg.Timeout)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // the URL is in the message already
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}

type apiResponse struct {
	Status    string   `json:"status"`
	ErrorType string   `json:"errorType"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	Data      *struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

type apiSample struct {
	Metric    map[string]string `json:"metric"`
	Value     json.RawMessage   `json:"value"`
	Histogram json.RawMessage   `json:"histogram"`
}

func decode(status int, contentType string, body []byte) (Result, error) {
	var ar apiResponse
	jerr := json.Unmarshal(body, &ar)
	ok2xx := status >= 200 && status < 300
	switch {
	case jerr == nil && ar.Status == "error":
		return Result{}, &APIError{StatusCode: status, Type: ar.ErrorType, Message: ar.Error}
	case !ok2xx:
		return Result{}, &APIError{StatusCode: status, Message: snippet(body)}
	case jerr != nil:
		return Result{}, fmt.Errorf("%w: HTTP %d, %s: %v: %s", ErrBadResponse, status, orNone(contentType), jerr, snippet(body))
	case ar.Status != "success":
		return Result{}, fmt.Errorf("%w: status %q, want \"success\": %s", ErrBadResponse, ar.Status, snippet(body))
	case ar.Data == nil:
		return Result{}, fmt.Errorf("%w: no data: %s", ErrBadResponse, snippet(body))
	}
	r := Result{Type: ar.Data.ResultType, Warnings: ar.Warnings}
	switch ar.Data.ResultType {
	case "scalar":
		v, err := decodePoint(ar.Data.Result)
		if err != nil {
			return Result{}, fmt.Errorf("%w: scalar: %v", ErrBadResponse, err)
		}
		r.Samples = []Sample{{Value: v}}
	case "vector":
		var raw []apiSample
		if err := json.Unmarshal(ar.Data.Result, &raw); err != nil {
			return Result{}, fmt.Errorf("%w: vector: %v", ErrBadResponse, err)
		}
		for _, s := range raw {
			if len(s.Value) == 0 && len(s.Histogram) > 0 {
				return Result{}, fmt.Errorf("%w: a native histogram sample; compare a number derived from it (histogram_quantile, histogram_count)", ErrUnsupportedResult)
			}
			v, err := decodePoint(s.Value)
			if err != nil {
				return Result{}, fmt.Errorf("%w: vector sample %v: %v", ErrBadResponse, s.Metric, err)
			}
			r.Samples = append(r.Samples, Sample{Metric: s.Metric, Value: v})
		}
	case "matrix":
		return Result{}, fmt.Errorf("%w: got a range vector (matrix); wrap the range selector in a function such as rate() or max_over_time()", ErrUnsupportedResult)
	case "string":
		return Result{}, fmt.Errorf("%w: got a string", ErrUnsupportedResult)
	default:
		return Result{}, fmt.Errorf("%w: unknown resultType %q", ErrBadResponse, ar.Data.ResultType)
	}
	return r, nil
}

// decodePoint reads a [<unix time>, "<value>"] pair.
func decodePoint(raw json.RawMessage) (float64, error) {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return 0, fmt.Errorf("want [time, \"value\"], got %s", snippet(raw))
	}
	var s string
	if err := json.Unmarshal(pair[1], &s); err != nil {
		return 0, fmt.Errorf("value %s is not a string", snippet(pair[1]))
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("value %q is not a number", s)
	}
	return v, nil
}

// snippet is the start of a body, on one line, for a message.
func snippet(b []byte) string {
	const limit = 200
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "(empty body)"
	}
	cut := len(b) > limit
	if cut {
		b = b[:limit]
	}
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
	if cut {
		s += "..."
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "no Content-Type"
	}
	return "Content-Type " + s
}
