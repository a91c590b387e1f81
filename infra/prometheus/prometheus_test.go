package prometheus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	client "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/prometheus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is what Prometheus scrapes: metrics the test sets, exposed by
// client_golang on every path.
type target struct {
	addr     string // host:port
	url      string
	ratio    client.Gauge       // cellkit_test_error_ratio
	latency  *client.GaugeVec   // cellkit_test_latency_seconds{cell}
	requests *client.CounterVec // cellkit_test_requests_total{code}
}

func startTarget(t *testing.T) *target {
	t.Helper()
	reg := client.NewRegistry()
	tg := &target{
		ratio:    client.NewGauge(client.GaugeOpts{Name: "cellkit_test_error_ratio", Help: "Set by the test."}),
		latency:  client.NewGaugeVec(client.GaugeOpts{Name: "cellkit_test_latency_seconds", Help: "Set by the test."}, []string{"cell"}),
		requests: client.NewCounterVec(client.CounterOpts{Name: "cellkit_test_requests_total", Help: "Counted by the test."}, []string{"code"}),
	}
	reg.MustRegister(tg.ratio, tg.latency, tg.requests)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	tg.url = srv.URL
	tg.addr = strings.TrimPrefix(srv.URL, "http://")
	return tg
}

// promServer is a Prometheus server run from the binary on PATH.
type promServer struct {
	URL     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
	once    sync.Once
}

// startPrometheus runs Prometheus on a free loopback port, scraping
// scrapeAddr every second, and returns once it is ready. The process is
// killed in t.Cleanup.
func startPrometheus(t *testing.T, scrapeAddr string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("the Prometheus server is not installed (%v): run scripts/tools/prometheus.sh", err)
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		t.Logf("%s: %s", bin, strings.SplitN(string(out), "\n", 2)[0])
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: cellkit
    static_configs:
      - targets: [%q]
`, scrapeAddr)
	cfgPath := filepath.Join(dir, "prom.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The free port can be taken between finding it and Prometheus
	// binding it; try again on a new one then.
	for attempt := 1; ; attempt++ {
		p, err := launch(t, bin, dir, cfgPath, attempt)
		if err == nil {
			return p
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v", attempt, err)
	}
}

func launch(t *testing.T, bin, dir, cfgPath string, attempt int) (*promServer, error) {
	t.Helper()
	addr := freeAddr(t)
	p := &promServer{URL: "http://" + addr, logPath: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt)), exited: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	p.cmd = exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
		"--web.listen-address="+addr,
		"--log.level=warn",
		"--storage.tsdb.retention.time=1h",
	)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Stop)

	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("prometheus exited before it was ready (%v); its log:\n%s", p.waitErr, p.log())
		default:
		}
		if resp, err := hc.Get(p.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("prometheus not ready at %s after 15s; its log:\n%s", p.URL, p.log())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// Stop kills the server and waits for it to exit.
func (p *promServer) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

func (p *promServer) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// blackhole accepts connections and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

func newGate(t *testing.T, cfg prometheus.Config) *prometheus.Gate {
	t.Helper()
	g, err := prometheus.NewGate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.CloseIdleConnections)
	return g
}

// gateFor builds a gate on url from a spec.
func gateFor(t *testing.T, url, spec string, edit ...func(*prometheus.Config)) *prometheus.Gate {
	t.Helper()
	cfg, err := prometheus.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = url
	for _, e := range edit {
		e(&cfg)
	}
	return newGate(t, cfg)
}

func check(t *testing.T, g *prometheus.Gate) failover.GateResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := g.Check(ctx, failover.GateInput{Cutover: "c1", Stage: "1/8", Since: time.Now()})
	t.Logf("%s", res)
	if res.Gate != g.Name() {
		t.Errorf("result names gate %q, want %q", res.Gate, g.Name())
	}
	if _, err := json.Marshal(res); err != nil {
		t.Errorf("result does not encode as JSON: %v", err)
	}
	return res
}

// eventually checks g until cond holds for its result, or fails the test
// after within.
func eventually(t *testing.T, within time.Duration, g *prometheus.Gate, what string, cond func(failover.GateResult) bool) failover.GateResult {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res := g.Check(ctx, failover.GateInput{})
		cancel()
		if cond(res) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last result: %s", what, res)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

func want(t *testing.T, res failover.GateResult, ok bool, value float64, detail ...string) {
	t.Helper()
	if res.OK != ok || res.Value != value {
		t.Errorf("got OK=%v Value=%v, want OK=%v Value=%v (%s)", res.OK, res.Value, ok, value, res.Detail)
	}
	for _, d := range detail {
		if !strings.Contains(res.Detail, d) {
			t.Errorf("Detail %q does not contain %q", res.Detail, d)
		}
	}
}

func TestGateAgainstPrometheus(t *testing.T) {
	start := time.Now()
	tg := startTarget(t)
	tg.ratio.Set(0.002)
	tg.latency.WithLabelValues("a1").Set(0.1)
	tg.latency.WithLabelValues("a2").Set(0.2)
	tg.latency.WithLabelValues("b1").Set(0.9)
	tg.requests.WithLabelValues("200").Add(3)
	prom := startPrometheus(t, tg.addr)
	t.Logf("prometheus ready at %s after %v", prom.URL, time.Since(start).Round(time.Millisecond))

	// The first scrape: every latency series is in. Prometheus 2.42 hands
	// new targets to the scrape loop on 5s tickers (discovery, then the
	// scrape manager), so this takes 5-10s.
	eventually(t, 20*time.Second, gateFor(t, prom.URL, "count(cellkit_test_latency_seconds) == 3"), "the first scrape", func(r failover.GateResult) bool { return r.OK })
	t.Logf("first samples after %v", time.Since(start).Round(time.Millisecond))

	t.Run("gauge below then above the threshold", func(t *testing.T) {
		g := gateFor(t, prom.URL, "max(cellkit_test_error_ratio) < 0.01")
		want(t, check(t, g), true, 0.002, "max(cellkit_test_error_ratio) = 0.002 < 0.01 (threshold)")

		tg.ratio.Set(0.031)
		res := eventually(t, 10*time.Second, g, "the gate to see 0.031", func(r failover.GateResult) bool { return r.Value == 0.031 })
		want(t, res, false, 0.031)
		if res.Detail != "max(cellkit_test_error_ratio) = 0.031 > 0.01 (threshold)" {
			t.Errorf("Detail = %q", res.Detail)
		}
		// At the threshold a strict < fails too.
		tg.ratio.Set(0.01)
		res = eventually(t, 10*time.Second, g, "the gate to see 0.01", func(r failover.GateResult) bool { return r.Value == 0.01 })
		want(t, res, false, 0.01, "= 0.01 == 0.01 (threshold)")

		tg.ratio.Set(0.002)
		eventually(t, 10*time.Second, g, "the gate to pass again", func(r failover.GateResult) bool { return r.OK })
	})

	t.Run("every series of a vector must hold", func(t *testing.T) {
		// The worst series is named, with its labels.
		res := check(t, gateFor(t, prom.URL, "cellkit_test_latency_seconds < 0.5"))
		want(t, res, false, 0.9,
			`cellkit_test_latency_seconds{cell="b1",instance="`+tg.addr+`",job="cellkit"} = 0.9 > 0.5 (threshold)`,
			"; 1 of 3 series break < 0.5")

		res = check(t, gateFor(t, prom.URL, `cellkit_test_latency_seconds{cell=~"a.*"} < 0.5`))
		want(t, res, true, 0.2, `{cell="a2",`, "= 0.2 < 0.5 (threshold); all 2 series hold")

		// For > the worst sample is the smallest.
		res = check(t, gateFor(t, prom.URL, "cellkit_test_latency_seconds > 0.15"))
		want(t, res, false, 0.1, `{cell="a1",`, "= 0.1 < 0.15 (threshold); 1 of 3 series break > 0.15")

		// Grouped aggregates are named by query and labels.
		res = check(t, gateFor(t, prom.URL, "max by (cell) (cellkit_test_latency_seconds) <= 0.9"))
		want(t, res, true, 0.9, `max by (cell) (cellkit_test_latency_seconds) {cell="b1"} = 0.9 == 0.9 (threshold); all 3 series hold`)

		res = check(t, gateFor(t, prom.URL, "cellkit_test_latency_seconds != 0.2"))
		want(t, res, false, 0.2, `{cell="a2",`, "1 of 3 series break != 0.2")
	})

	t.Run("empty result", func(t *testing.T) {
		// No request ever failed: there is no code="500" series at all.
		spec := `sum(rate(cellkit_test_requests_total{code="500"}[1m])) < 0.01`
		res := check(t, gateFor(t, prom.URL, spec))
		want(t, res, false, 0, "no samples; an empty result fails")

		res = check(t, gateFor(t, prom.URL, spec, func(c *prometheus.Config) { c.PassOnEmpty = true }))
		want(t, res, true, 0, "no samples; passes (PassOnEmpty)")

		// The counter itself is there.
		res = check(t, gateFor(t, prom.URL, `sum(cellkit_test_requests_total{code="200"}) >= 3`))
		want(t, res, true, 3)
	})

	t.Run("scalars, NaN and infinities", func(t *testing.T) {
		g := gateFor(t, prom.URL, "scalar(max(cellkit_test_latency_seconds)) >= 0.5")
		r, err := g.Query(context.Background())
		if err != nil || r.Type != "scalar" || len(r.Samples) != 1 {
			t.Fatalf("Query = %+v, %v; want one scalar", r, err)
		}
		want(t, check(t, g), true, 0.9, "scalar(max(cellkit_test_latency_seconds)) = 0.9 > 0.5 (threshold)")

		// A ratio over nothing is NaN; NaN fails every comparison.
		want(t, check(t, gateFor(t, prom.URL, "0/0 < 1")), false, 0, "0/0 = NaN, not a number: fails < 1")
		want(t, check(t, gateFor(t, prom.URL, "0/0 != 1")), false, 0, "NaN")
		// Infinities compare, and Value stays JSON-safe.
		want(t, check(t, gateFor(t, prom.URL, "1/0 < 1")), false, math.MaxFloat64, "1/0 = +Inf > 1 (threshold)")
		want(t, check(t, gateFor(t, prom.URL, "-1/0 < 1")), true, -math.MaxFloat64, "-1/0 = -Inf < 1 (threshold)")
	})

	t.Run("bad query fails closed with Prometheus's error", func(t *testing.T) {
		g := newGate(t, prometheus.Config{URL: prom.URL, Query: "sum(cellkit_test_latency_seconds", Op: prometheus.LT, Threshold: 1})
		res := check(t, g)
		want(t, res, false, 0, "cannot evaluate, failing closed", "HTTP 400: bad_data", "parse error", "unclosed left parenthesis")
		_, err := g.Query(context.Background())
		var ae *prometheus.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Type != "bad_data" {
			t.Errorf("Query: %v, want an *APIError 400 bad_data", err)
		}

		// A type error: rate of an instant vector.
		res = check(t, newGate(t, prometheus.Config{URL: prom.URL, Query: "rate(cellkit_test_requests_total)", Op: prometheus.LT, Threshold: 1}))
		want(t, res, false, 0, "bad_data", "expected type range vector")
	})

	t.Run("results a gate cannot judge fail closed", func(t *testing.T) {
		g := newGate(t, prometheus.Config{URL: prom.URL, Query: "cellkit_test_error_ratio[10s]", Op: prometheus.LT, Threshold: 1})
		want(t, check(t, g), false, 0, "range vector (matrix)")
		if _, err := g.Query(context.Background()); !errors.Is(err, prometheus.ErrUnsupportedResult) {
			t.Errorf("Query: %v, want ErrUnsupportedResult", err)
		}
		g = newGate(t, prometheus.Config{URL: prom.URL, Query: `"healthy"`, Op: prometheus.EQ, Threshold: 1})
		want(t, check(t, g), false, 0, "got a string")
	})

	t.Run("not the Prometheus API fails closed", func(t *testing.T) {
		// A wrong path prefix: Prometheus answers 404.
		res := check(t, gateFor(t, prom.URL+"/nope", "up > 0"))
		want(t, res, false, 0, "HTTP 404", prom.URL+"/nope")

		// The exporter instead of the server: 200 with the text format.
		g := gateFor(t, tg.url, "up > 0")
		res = check(t, g)
		want(t, res, false, 0, "not a Prometheus query response", "HTTP 200", "text/plain", "invalid character")
		if _, err := g.Query(context.Background()); !errors.Is(err, prometheus.ErrBadResponse) {
			t.Errorf("Query: %v, want ErrBadResponse", err)
		}
	})

	t.Run("no answer in time fails closed", func(t *testing.T) {
		g := gateFor(t, blackhole(t), "up > 0", func(c *prometheus.Config) { c.Timeout = 300 * time.Millisecond })
		begin := time.Now()
		res := check(t, g)
		want(t, res, false, 0, "prometheus unreachable: no answer within 300ms")
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("check took %v with a 300ms timeout", took)
		}

		// The caller's deadline is not the gate's timeout.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res = g.Check(ctx, failover.GateInput{})
		want(t, res, false, 0, "check interrupted: context canceled")
	})

	t.Run("closed port fails closed", func(t *testing.T) {
		g := gateFor(t, "http://"+freeAddr(t), "up > 0")
		want(t, check(t, g), false, 0, "prometheus unreachable", "connection refused")
		if _, err := g.Query(context.Background()); !errors.Is(err, prometheus.ErrUnreachable) {
			t.Errorf("Query: %v, want ErrUnreachable", err)
		}
	})

	// Last: the server goes away under a gate that passed.
	t.Run("server stopped fails closed", func(t *testing.T) {
		g := gateFor(t, prom.URL, "max(cellkit_test_error_ratio) < 0.01")
		want(t, check(t, g), true, 0.002)
		prom.Stop()
		res := check(t, g)
		want(t, res, false, 0, "failing closed", "prometheus at "+prom.URL, "prometheus unreachable")
	})
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}
