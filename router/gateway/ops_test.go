package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cellkit/cellkit/router/gateway"
)

func adminGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReadinessMetrics(t *testing.T) {
	e := newEnv(t, testConfig())
	if code, body := adminGet(t, e.adminAddr, "/healthz"); code != 200 {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, body := adminGet(t, e.adminAddr, "/readyz"); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}
	// b1 owns slots but loses its instances: not ready.
	all, _ := e.disc.Instances()
	e.disc.Set(all[:1])
	eventually(t, "not ready", func() bool { return e.gw.Ready() != nil })
	if code, body := adminGet(t, e.adminAddr, "/readyz"); code != 503 || !strings.Contains(body, "cell b1") {
		t.Fatalf("readyz without b1: %d %s", code, body)
	}
	// A request for b1 is answered 503, not hung.
	if r := e.get("/v1/balance/"+keyOf(t, "b1"), nil); r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "no HTTP instance") {
		t.Fatalf("no instance: %d %s", r.status, r.body)
	}
	e.disc.Set(all)
	eventually(t, "ready again", func() bool { return e.gw.Ready() == nil })

	e.get("/v1/balance/"+keyOf(t, "a1"), nil)
	_, body := adminGet(t, e.adminAddr, "/metrics")
	for _, want := range []string{
		"cellrouter_map_epoch 1",
		`cellrouter_requests_total{cell="a1",outcome="ok",proto="http"} 1`,
		`cellrouter_requests_total{cell="b1",outcome="no_instance",proto="http"} 1`,
		"cellrouter_added_latency_seconds_bucket",
		"cellrouter_map_update_age_seconds",
		"cellrouter_map_revision_lag",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestRevisionLagProbe(t *testing.T) {
	e := newEnv(t, testConfig())
	reg := prometheus.NewRegistry()
	var gw *gateway.Gateway
	gw, err := gateway.New(testConfig(), gateway.Options{
		Source: e.store, Discovery: e.disc, Registry: reg, ProbeInterval: time.Millisecond,
		RevisionProbe: func(context.Context) (int64, error) { return gw.Watcher().Revision() + 3, nil },
	})
	must(t, err)
	must(t, gw.Start(ctxT(t)))
	defer gw.Close()
	lag := func() float64 {
		mfs, err := reg.Gather()
		must(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "cellrouter_map_revision_lag" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	eventually(t, "revision lag 3", func() bool { return lag() == 3 })
}

// Draining: readiness turns 503, the listeners stop accepting, requests in
// flight (HTTP and a gRPC stream) finish, then Serve returns.
func TestGracefulDrain(t *testing.T) {
	e := newEnv(t, testConfig())
	owner := e.cells["a1"]
	key := keyOf(t, "a1")

	slow := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.httpAddr+"/slow/1", nil)
		req.Header.Set("X-User-Id", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- reply{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- reply{status: resp.StatusCode, body: string(b)}
	}()
	<-owner.slowStarted

	// A bidi stream in flight.
	cc, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer cc.Close()
	stream, err := cc.NewStream(withKey(ctxT(t), "x-user-id", key), &echoDesc.Streams[0], "/cellkit.test.Echo/Chat")
	must(t, err)
	must(t, stream.SendMsg(wrapperspb.String("before")))
	must(t, stream.RecvMsg(new(wrapperspb.StringValue)))

	e.stop()
	eventually(t, "HTTP listener closed", func() bool {
		c, err := net.Dial("tcp", e.httpAddr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if code, body := adminGet(t, e.adminAddr, "/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("readyz while draining: %d %s", code, body)
	}
	// The stream still works.
	must(t, stream.SendMsg(wrapperspb.String("during")))
	got := new(wrapperspb.StringValue)
	must(t, stream.RecvMsg(got))
	if got.GetValue() != "a1:during" {
		t.Fatalf("stream during drain: %q", got.GetValue())
	}
	must(t, stream.CloseSend())
	if err := stream.RecvMsg(got); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	select {
	case <-e.served:
		t.Fatal("Serve returned with a request in flight")
	default:
	}
	close(owner.slowRelease)
	if r := <-slow; r.status != 200 || r.body != "slow done by a1" {
		t.Fatalf("in-flight request: %d %q", r.status, r.body)
	}
	select {
	case err := <-e.served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		e.served <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
}

// A streamed answer reaches the client piece by piece, and hop-by-hop
// headers stay on their hop.
func TestStreamingAndHopByHop(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.httpAddr+"/stream/1", nil)
	req.Header.Set("X-User-Id", key)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "secret")
	resp, err := e.client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first;" {
		t.Fatalf("first piece: %q %v", buf, err)
	}
	close(e.cells["a1"].slowRelease)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second" {
		t.Fatalf("rest: %q", rest)
	}
	got := e.cells["a1"].seen()
	s := got[len(got)-1]
	if v := s.headers.Get("X-Hop"); v != "" {
		t.Fatalf("hop-by-hop X-Hop reached the cell: %q", v)
	}
	if v := s.headers.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q", v)
	}
}

// The cell's answer reaches the client as the cell wrote it, less the
// hop-by-hop headers (well-known ones and those its Connection header
// names), for GET, HEAD and a 204; a plain answer (forwarded raw) keeps its
// status, headers and body.
func TestAnswerHeaders(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+e.httpAddr+path, nil)
		req.Header.Set("X-User-Id", key)
		resp, err := e.client.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp, string(b)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, "/answer/x", http.StatusOK, "body"},
		{http.MethodGet, "/answer/known", http.StatusOK, "body"},
		{http.MethodHead, "/answer/x", http.StatusOK, ""},
		{http.MethodGet, "/answer/none", http.StatusNoContent, ""},
	} {
		resp, body := do(tc.method, tc.path)
		if resp.StatusCode != tc.status || body != tc.body {
			t.Fatalf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
		for _, h := range []string{"X-Secret", "Keep-Alive", "Proxy-Authenticate"} {
			if v := resp.Header.Get(h); v != "" {
				t.Fatalf("%s %s: hop-by-hop %s reached the client: %q", tc.method, tc.path, h, v)
			}
		}
		if resp.Header.Get("X-Kept") != "yes" || resp.Header.Get("Date") != "Sat, 21 Nov 2026 12:00:00 GMT" {
			t.Fatalf("%s %s: end-to-end headers lost: %v", tc.method, tc.path, resp.Header)
		}
		if resp.Close {
			t.Fatalf("%s %s: the cell's Connection header closed the client's connection", tc.method, tc.path)
		}
	}
	resp, body := do(http.MethodGet, "/plain/x")
	if resp.StatusCode != http.StatusCreated || body != "plain" || resp.ContentLength != 5 ||
		resp.Header.Get("X-Cell-Said") != "HELLO" || resp.Header.Get("Date") == "" || resp.Header.Get("Cellkit-Cell") != "a1" {
		t.Fatalf("plain answer: %d %q cl %d %v", resp.StatusCode, body, resp.ContentLength, resp.Header)
	}
}

// Requests the lean HTTP/1.1 loop does not serve itself (a chunked body,
// HTTP/1.0) are handed with their connection to net/http; pipelined plain
// requests are answered in order.
func TestHandOffAndPipelining(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "b1")
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.httpAddr+"/v1/credit/"+key+"?amount=2&requestId=chunked", io.NopCloser(strings.NewReader(`{"streamed":true}`)))
	req.ContentLength = -1 // chunked
	if r := e.do(req); r.status != 200 || r.entry.Cell != "b1" {
		t.Fatalf("chunked body: %d %s", r.status, r.body)
	}
	if r := e.get("/v1/balance/"+key, nil); r.status != 200 || r.entry.Balance != 2 {
		t.Fatalf("after hand-off: %d %s", r.status, r.body)
	}

	raw := func(payload string, answers int) []string {
		t.Helper()
		c, err := net.Dial("tcp", e.httpAddr)
		must(t, err)
		defer c.Close()
		_, err = io.WriteString(c, payload)
		must(t, err)
		br := bufio.NewReader(c)
		var out []string
		for range answers {
			resp, err := http.ReadResponse(br, nil)
			must(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out = append(out, resp.Proto+" "+resp.Status+" "+string(b))
		}
		return out
	}
	got := raw("GET /v1/balance/"+key+" HTTP/1.0\r\nHost: x\r\n\r\n", 1)
	if !strings.HasPrefix(got[0], "HTTP/1.0 200") || !strings.Contains(got[0], `"cell":"b1"`) {
		t.Fatalf("HTTP/1.0: %q", got)
	}
	a1 := keyOf(t, "a1")
	got = raw("GET /v1/balance/"+key+" HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/balance/"+a1+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2)
	if !strings.Contains(got[0], `"cell":"b1"`) || !strings.Contains(got[1], `"cell":"a1"`) {
		t.Fatalf("pipelined: %q", got)
	}
	got = raw("GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n", 1)
	if !strings.Contains(got[0], "400") || !strings.Contains(got[0], "NO_KEY") {
		t.Fatalf("no key: %q", got)
	}
}

// The same routing with net/http serving every connection.
func TestStdServer(t *testing.T) {
	c := testConfig()
	c.HTTP.StdServer = true
	e := newEnv(t, c)
	for _, owner := range []string{"a1", "b1"} {
		if r := e.get("/v1/balance/"+keyOf(t, owner), nil); r.status != 200 || r.entry.Cell != owner {
			t.Fatalf("%s: %d %s", owner, r.status, r.body)
		}
	}
}

func TestProfilingOnlyWhenAsked(t *testing.T) {
	e := newEnv(t, testConfig())
	if code, _ := adminGet(t, e.adminAddr, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("profiler served without Options.Profiling: %d", code)
	}
	gw, err := gateway.New(testConfig(), gateway.Options{Source: e.src, Discovery: e.disc, Profiling: true})
	must(t, err)
	for path, want := range map[string]string{"/debug/pprof/": "goroutine", "/debug/pprof/cmdline": "gateway.test"} {
		rec := httptest.NewRecorder()
		gw.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s with Profiling: %d %.80q", path, rec.Code, rec.Body.String())
		}
	}
}
