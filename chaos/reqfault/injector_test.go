package reqfault

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/clock/clocktest"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/internal/testsvc"
)

func TestPutListDelete(t *testing.T) {
	ctx, cli, cluster := fresh(t)

	if err := Put(ctx, cli, cluster, exp("no-effect", nil)); !errors.Is(err, ErrBadExperiment) {
		t.Fatalf("Put without an effect = %v, want ErrBadExperiment", err)
	}
	if err := Put(ctx, cli, cluster, exp("late", func(e *Experiment) {
		e.HTTPStatus, e.ExpiresAt = 503, time.Now().Add(MaxTTL+time.Minute)
	})); !errors.Is(err, ErrBadExperiment) {
		t.Fatalf("Put beyond MaxTTL = %v, want ErrBadExperiment", err)
	}
	if err := Put(ctx, cli, "Not_A_Cluster", exp("x", func(e *Experiment) { e.Abort = true })); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("Put to a bad cluster = %v, want ErrBadConfig", err)
	}
	if _, err := Delete(ctx, cli, cluster, "Bad/Name"); !errors.Is(err, ErrBadExperiment) {
		t.Fatalf("Delete of a bad name = %v, want ErrBadExperiment", err)
	}

	slow := exp("slow", func(e *Experiment) {
		e.Latency, e.ExpiresAt = Duration(time.Second), time.Now().Add(90*time.Second)
	})
	must(t, Put(ctx, cli, cluster, slow))
	lease1 := leaseOf(t, cli, Key(cluster, "slow"))
	ttl, err := cli.TimeToLive(ctx, lease1)
	must(t, err)
	if ttl.GrantedTTL < 90 || ttl.GrantedTTL > 91 || ttl.TTL <= 0 {
		t.Fatalf("lease TTL granted %ds, left %ds; want 90-91s, running", ttl.GrantedTTL, ttl.TTL)
	}
	exps, bad, err := List(ctx, cli, cluster)
	must(t, err)
	if len(bad) != 0 || len(exps) != 1 || exps[0].Name != "slow" || exps[0].Latency != slow.Latency || exps[0].Created.IsZero() {
		t.Fatalf("List = %+v, %v", exps, bad)
	}

	// Putting the name again replaces it under a new lease and revokes the
	// old one.
	must(t, Put(ctx, cli, cluster, exp("slow", func(e *Experiment) { e.Latency = Duration(2 * time.Second) })))
	lease2 := leaseOf(t, cli, Key(cluster, "slow"))
	if lease2 == lease1 || !revoked(t, cli, lease1) {
		t.Fatalf("replacing: lease %x -> %x, old revoked %v", lease1, lease2, revoked(t, cli, lease1))
	}
	exps, _, err = List(ctx, cli, cluster)
	must(t, err)
	if len(exps) != 1 || exps[0].Latency != Duration(2*time.Second) {
		t.Fatalf("List after replace = %+v", exps)
	}

	ok, err := Delete(ctx, cli, cluster, "slow")
	if err != nil || !ok {
		t.Fatalf("Delete = %v, %v; want true", ok, err)
	}
	if !revoked(t, cli, lease2) {
		t.Fatal("Delete left the experiment's lease running")
	}
	if ok, err := Delete(ctx, cli, cluster, "slow"); err != nil || ok {
		t.Fatalf("second Delete = %v, %v; want false", ok, err)
	}
	if exps, bad, err := List(ctx, cli, cluster); err != nil || len(exps)+len(bad) != 0 {
		t.Fatalf("List after Delete = %+v, %v, %v", exps, bad, err)
	}
}

func leaseOf(t *testing.T, cli *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(ctxT(t), key)
	must(t, err)
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("%s: %v, want one key under a lease", key, resp.Kvs)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func revoked(t *testing.T, cli *clientv3.Client, id clientv3.LeaseID) bool {
	t.Helper()
	resp, err := cli.TimeToLive(ctxT(t), id)
	must(t, err)
	return resp.TTL == -1
}

// TestStatusFaults: an experiment put in etcd fails matching requests over
// real HTTP and gRPC servers, and stops when deleted.
func TestStatusFaults(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	inj, _ := newInjector(t, cli, cluster, nil)
	svc := serve(t, inj)

	must(t, Put(ctx, cli, cluster, exp("credit-503", func(e *Experiment) {
		e.Methods, e.HTTPStatus = []string{"POST /v1/credit/*"}, 503
	})))
	must(t, Put(ctx, cli, cluster, exp("credit-exhausted", func(e *Experiment) {
		e.Methods, e.GRPCCode = []string{testsvc.CreditMethod}, "RESOURCE_EXHAUSTED"
	})))

	var res httpResult
	waitFor(t, "HTTP credit to fail", func() bool {
		res = svc.do(ctx, "POST", "/v1/credit/u1?amount=1&requestId=h1", nil)
		return res.status == 503
	})
	var body FaultBody
	must(t, json.Unmarshal([]byte(res.body), &body))
	if body.Experiment != "credit-503" || res.chaos != "credit-503" {
		t.Fatalf("503 body %+v, %s %q", body, chaosHeader, res.chaos)
	}
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 200 || res.chaos != "" {
		t.Fatalf("HTTP balance = %+v, want 200 untouched", res)
	}

	var trailer metadata.MD
	waitFor(t, "gRPC credit to fail", func() bool {
		_, err := svc.grpc.Credit(ctx, "u1", 1, "g1", grpc.Trailer(&trailer))
		return status.Code(err) == codes.ResourceExhausted
	})
	if got := trailer.Get(ChaosMD); !slices.Equal(got, []string{"credit-exhausted"}) {
		t.Fatalf("trailer %s = %v", ChaosMD, got)
	}
	if _, _, err := svc.grpc.Balance(ctx, "u1"); err != nil {
		t.Fatalf("gRPC balance: %v", err)
	}
	if got := inj.Injected(); got["credit-503"] < 1 || got["credit-exhausted"] < 1 {
		t.Fatalf("Injected = %v", got)
	}

	for _, name := range []string{"credit-503", "credit-exhausted"} {
		if ok, err := Delete(ctx, cli, cluster, name); err != nil || !ok {
			t.Fatalf("Delete %s = %v, %v", name, ok, err)
		}
	}
	waitFor(t, "HTTP credit to pass", func() bool {
		return svc.do(ctx, "POST", "/v1/credit/u1?amount=1&requestId=h2", nil).status == 200
	})
	waitFor(t, "gRPC credit to pass", func() bool {
		_, err := svc.grpc.Credit(ctx, "u1", 1, "g2")
		return err == nil
	})
}

// TestLatency drives the injected wait with a fake clock: a request stays
// blocked until the clock has advanced by the latency, and a caller that
// gives up ends the wait.
func TestLatency(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	clk := clocktest.New(time.Now())
	inj, _ := newInjector(t, cli, cluster, func(c *Config) {
		c.Clock = clk
		c.Rand = func() float64 { return 0.5 }
	})
	svc := serve(t, inj)
	must(t, Put(ctx, cli, cluster, exp("slow-reads", func(e *Experiment) {
		e.Methods = []string{"GET /v1/balance/*", testsvc.BalanceMethod, testsvc.StatementMethod}
		e.Latency, e.Jitter = Duration(2*time.Second), Duration(time.Second) // + 0.5 * 1s
	})))
	waitFor(t, "the experiment to arrive", func() bool { return len(inj.Active()) == 1 })

	calls := []struct {
		name string
		call func() error
	}{
		{"HTTP", func() error {
			if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.err != nil || res.status != 200 || res.chaos != "slow-reads" {
				return errors.New(strings.TrimSpace(res.body))
			}
			return nil
		}},
		{"gRPC unary", func() error {
			var tr metadata.MD
			_, _, err := svc.grpc.Balance(ctx, "u1", grpc.Trailer(&tr))
			if err == nil && len(tr.Get(ChaosMD)) == 0 {
				err = errors.New("no chaos trailer")
			}
			return err
		}},
		{"gRPC stream", func() error {
			_, err := svc.grpc.Statement(ctx, "u1")
			return err
		}},
	}
	for _, c := range calls {
		done := make(chan error, 1)
		go func() { done <- c.call() }()
		waitFor(t, c.name+" to wait on the clock", func() bool { return clk.Pending() == 1 })
		clk.Advance(2500*time.Millisecond - 1)
		select {
		case err := <-done:
			t.Fatalf("%s answered before its latency (%v)", c.name, err)
		default:
		}
		if clk.Pending() != 1 {
			t.Fatalf("%s: the wait ended early", c.name)
		}
		clk.Advance(1)
		if err := <-done; err != nil {
			t.Fatalf("%s after the latency: %v", c.name, err)
		}
	}

	// A caller that gives up ends the wait (the timer is stopped).
	cancelWhenWaiting := func() context.Context {
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			defer cancel()
			for clk.Pending() == 0 && cctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
		}()
		return cctx
	}
	if _, _, err := svc.grpc.Balance(cancelWhenWaiting(), "u1"); status.Code(err) != codes.Canceled {
		t.Fatalf("gRPC cancelled inside the latency = %v", err)
	}
	waitFor(t, "the gRPC wait to end", func() bool { return clk.Pending() == 0 })
	if res := svc.do(cancelWhenWaiting(), "GET", "/v1/balance/u1", nil); res.err == nil {
		t.Fatalf("cancelled HTTP request = %+v", res)
	}
	waitFor(t, "the HTTP wait to end", func() bool { return clk.Pending() == 0 })
	if got := inj.Injected()["slow-reads"]; got != 5 {
		t.Fatalf("Injected = %d, want 5", got)
	}
}

func TestAbort(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	inj, _ := newInjector(t, cli, cluster, nil)
	svc := serve(t, inj)
	must(t, Put(ctx, cli, cluster, exp("drop-balance", func(e *Experiment) {
		e.Methods, e.Abort = []string{"GET /v1/balance/*", testsvc.BalanceMethod}, true
	})))
	waitFor(t, "the experiment to arrive", func() bool { return len(inj.Active()) == 1 })

	// HTTP/1: the connection is closed without a response.
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.err == nil {
		t.Fatalf("aborted HTTP/1 request = %+v, want no response", res)
	} else {
		t.Logf("HTTP/1 client saw: %v", res.err)
	}

	// HTTP/2: the stream is reset; the connection carries on.
	h2 := httptest.NewUnstartedServer(inj.HTTP(testsvc.NewServer("a1").HTTPHandler()))
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	hc := h2.Client()
	t.Cleanup(hc.CloseIdleConnections)
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", h2.URL+path, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := get("/v1/balance/u1"); err == nil {
		t.Fatalf("aborted HTTP/2 request = %s, want a reset", resp.Status)
	} else {
		t.Logf("HTTP/2 client saw: %v", err)
	}
	if resp, err := get("/healthz"); err != nil || resp.ProtoMajor != 2 {
		t.Fatalf("next HTTP/2 request = %v, %v", resp, err)
	}

	_, _, err := svc.grpc.Balance(ctx, "u1")
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "aborted") {
		t.Fatalf("aborted gRPC call = %v, want UNAVAILABLE", err)
	}
	if _, err := svc.grpc.Credit(ctx, "u1", 1, "r1"); err != nil {
		t.Fatalf("other gRPC method: %v", err)
	}
}

func TestShadowOnly(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	inj, _ := newInjector(t, cli, cluster, nil)
	svc := serve(t, inj)
	must(t, Put(ctx, cli, cluster, exp("shadow-500", func(e *Experiment) {
		e.ShadowOnly, e.HTTPStatus = true, 500
	})))
	waitFor(t, "the experiment to arrive", func() bool { return len(inj.Active()) == 1 })

	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 200 {
		t.Fatalf("plain request = %+v", res)
	}
	if res := svc.do(ctx, "GET", "/v1/balance/u1", http.Header{"Cellkit-Shadow": {"TRUE"}}); res.status != 500 {
		t.Fatalf("shadow request = %+v", res)
	}
	if _, _, err := svc.grpc.Balance(ctx, "u1"); err != nil {
		t.Fatalf("plain gRPC: %v", err)
	}
	sctx := metadata.AppendToOutgoingContext(ctx, ShadowMD, "1")
	if _, _, err := svc.grpc.Balance(sctx, "u1"); status.Code(err) != codes.Internal {
		t.Fatalf("shadow gRPC = %v, want INTERNAL (HTTP 500)", err)
	}
}

// TestExpiryOnOwnClock: an experiment stops applying when the injector's
// clock passes ExpiresAt, though its key is still in etcd.
func TestExpiryOnOwnClock(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	clk := clocktest.New(time.Now())
	inj, _ := newInjector(t, cli, cluster, func(c *Config) { c.Clock = clk })
	svc := serve(t, inj)
	e := exp("fail", func(e *Experiment) { e.HTTPStatus = 503 })
	must(t, Put(ctx, cli, cluster, e))
	waitFor(t, "the experiment to apply", func() bool {
		return svc.do(ctx, "GET", "/v1/balance/u1", nil).status == 503
	})

	// Wall-clock readings: the injector compares with the parsed expiry,
	// which has no monotonic reading.
	clk.Advance(e.ExpiresAt.Round(0).Sub(clk.Now().Round(0)) - 1)
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 503 {
		t.Fatalf("just before expiry = %+v", res)
	}
	clk.Advance(1)
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 200 {
		t.Fatalf("after expiry = %+v", res)
	}
	if got := inj.Active(); len(got) != 0 {
		t.Fatalf("Active after expiry = %v", names(got))
	}
	resp, err := cli.Get(ctx, Key(cluster, "fail"))
	must(t, err)
	if len(resp.Kvs) != 1 {
		t.Fatal("the key is gone already: the test shows nothing")
	}
}

// TestLeaseRunsOut: etcd deletes an experiment's key when its expiry
// comes, and the injector drops it.
func TestLeaseRunsOut(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	_, log := newInjector(t, cli, cluster, nil)
	must(t, Put(ctx, cli, cluster, exp("brief", func(e *Experiment) {
		e.HTTPStatus, e.ExpiresAt = 503, time.Now().Add(2*time.Second)
	})))
	waitFor(t, "the injector to arm it", func() bool {
		return strings.Contains(log.String(), `"reqfault: experiment armed" name=brief`)
	})
	waitFor(t, "etcd to delete the key", func() bool {
		resp, err := cli.Get(ctx, Key(cluster, "brief"), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	})
	waitFor(t, "the injector to drop it", func() bool {
		return strings.Contains(log.String(), `"reqfault: experiment removed" name=brief`)
	})
}

// TestCorruptDocuments: values under the prefix that are not usable
// experiments are reported by List and skipped by the injector; the others
// still apply, and a bad write over a good one leaves the good one.
func TestCorruptDocuments(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	lease, err := cli.Grant(ctx, 3600)
	must(t, err)
	t.Cleanup(func() { cli.Revoke(context.Background(), lease.ID) })
	doc := func(e Experiment) string {
		b, err := json.Marshal(e)
		must(t, err)
		return string(b)
	}
	rawPut := func(name, value string, withLease bool) {
		t.Helper()
		var opts []clientv3.OpOption
		if withLease {
			opts = append(opts, clientv3.WithLease(lease.ID))
		}
		_, err := cli.Put(ctx, Key(cluster, name), value, opts...)
		must(t, err)
	}
	fail := func(name string) Experiment { return exp(name, func(e *Experiment) { e.HTTPStatus = 500 }) }
	rawPut("garbage", "{not json", true)
	rawPut("unknown-field", strings.Replace(doc(fail("unknown-field")), `"name"`, `"color":"red","name"`, 1), true)
	rawPut("misnamed", doc(fail("other")), true)
	rawPut("nolease", doc(fail("nolease")), false)
	rawPut("far", doc(exp("far", func(e *Experiment) { e.HTTPStatus, e.ExpiresAt = 500, time.Now().Add(30*24*time.Hour) })), true)
	rawPut("nested/deeper", doc(fail("deeper")), true)
	must(t, Put(ctx, cli, cluster, exp("good", func(e *Experiment) {
		e.Methods, e.HTTPStatus = []string{"GET /v1/balance/*"}, 418
	})))

	exps, bad, err := List(ctx, cli, cluster)
	must(t, err)
	if got := names(exps); !slices.Equal(got, []string{"good"}) {
		t.Fatalf("List = %v", got)
	}
	var badKeys []string
	for _, err := range bad {
		var ce *CorruptError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
			t.Fatalf("List reported %v, want a *CorruptError", err)
		}
		badKeys = append(badKeys, strings.TrimPrefix(ce.Key, Prefix(cluster)))
		if strings.HasSuffix(ce.Key, "/nolease") != errors.Is(err, ErrNoLease) {
			t.Fatalf("%v: ErrNoLease %v", err, errors.Is(err, ErrNoLease))
		}
	}
	slices.Sort(badKeys)
	if want := []string{"far", "garbage", "misnamed", "nested/deeper", "nolease", "unknown-field"}; !slices.Equal(badKeys, want) {
		t.Fatalf("List reported %v, want %v", badKeys, want)
	}

	inj, log := newInjector(t, cli, cluster, nil)
	svc := serve(t, inj)
	if got := names(inj.Active()); !slices.Equal(got, []string{"good"}) {
		t.Fatalf("Active = %v", got)
	}
	if n := strings.Count(log.String(), "ignoring an unusable experiment"); n != 6 {
		t.Fatalf("logged %d unusable documents, want 6", n)
	}
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 418 {
		t.Fatalf("good experiment = %+v", res)
	}
	if res := svc.do(ctx, "POST", "/v1/credit/u1?amount=1&requestId=r1", nil); res.status != 200 {
		t.Fatalf("request no usable experiment selects = %+v", res)
	}

	// A bad write over the good experiment leaves it in force.
	rawPut("good", `{"name":"good","fraction":2}`, true)
	waitFor(t, "the injector to see the bad write", func() bool {
		return strings.Contains(log.String(), "the previous version stays in force")
	})
	if res := svc.do(ctx, "GET", "/v1/balance/u1", nil); res.status != 418 {
		t.Fatalf("good experiment after a bad write = %+v", res)
	}
	// A corrupt key written meanwhile changes nothing; a good version
	// replaces the kept one; deleting it ends it.
	rawPut("garbage-2", "[]", true)
	must(t, Put(ctx, cli, cluster, exp("good", func(e *Experiment) {
		e.Methods, e.HTTPStatus = []string{"GET /v1/balance/*"}, 429
	})))
	waitFor(t, "the new version", func() bool { return svc.do(ctx, "GET", "/v1/balance/u1", nil).status == 429 })
	if _, err := Delete(ctx, cli, cluster, "good"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the experiment to end", func() bool { return svc.do(ctx, "GET", "/v1/balance/u1", nil).status == 200 })
}

// TestWatchSurvivesEtcdRestart: the injector keeps following changes after
// etcd restarts under it.
func TestWatchSurvivesEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cli, cluster := ctxT(t), etcdtest.Client(t, srv), clusterFor(t)
	inj, _ := newInjector(t, cli, cluster, nil)
	svc := serve(t, inj)
	must(t, Put(ctx, cli, cluster, exp("before", func(e *Experiment) {
		e.Methods, e.HTTPStatus = []string{"GET /v1/balance/*"}, 503
	})))
	waitFor(t, "the first experiment", func() bool { return svc.do(ctx, "GET", "/v1/balance/u1", nil).status == 503 })

	must(t, srv.Restart(ctx))
	waitFor(t, "a write after the restart", func() bool {
		return Put(ctx, cli, cluster, exp("after", func(e *Experiment) {
			e.Methods, e.HTTPStatus = []string{"POST /v1/credit/*"}, 502
		})) == nil
	})
	waitFor(t, "the second experiment", func() bool {
		return svc.do(ctx, "POST", "/v1/credit/u1?amount=1&requestId=r1", nil).status == 502
	})
	if _, err := Delete(ctx, cli, cluster, "before"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first experiment to end", func() bool { return svc.do(ctx, "GET", "/v1/balance/u1", nil).status == 200 })
}

// TestReloadAfterCompaction: a watch that resumes from a compacted
// revision reloads the whole prefix.
func TestReloadAfterCompaction(t *testing.T) {
	ctx, cli, cluster := fresh(t)
	status503 := func(e *Experiment) { e.HTTPStatus = 503 }
	must(t, Put(ctx, cli, cluster, exp("a", status503)))
	must(t, Put(ctx, cli, cluster, exp("b", status503)))

	log, lb := testLogger(t)
	inj := newUnstarted(Config{Cluster: cluster, Client: cli, Logger: log, RetryBackoff: 10 * time.Millisecond})
	rev, err := inj.load(ctx)
	must(t, err)
	if got := names(inj.Active()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("loaded %v", got)
	}
	// Changes the injector has not seen, then compaction of their history.
	must(t, Put(ctx, cli, cluster, exp("c", status503)))
	if _, err := Delete(ctx, cli, cluster, "a"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/")
	must(t, err)
	_, err = cli.Compact(ctx, resp.Header.Revision)
	must(t, err)

	inj.start(ctx, rev)
	t.Cleanup(inj.Close)
	waitFor(t, "the reload", func() bool { return slices.Equal(names(inj.Active()), []string{"b", "c"}) })
	if !strings.Contains(lb.String(), "compacted") {
		t.Fatal("no log of the compaction")
	}
	// And it watches on from there.
	must(t, Put(ctx, cli, cluster, exp("d", status503)))
	waitFor(t, "a change after the reload", func() bool { return slices.Equal(names(inj.Active()), []string{"b", "c", "d"}) })
}

func TestNilInjector(t *testing.T) {
	var inj *Injector
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	rec := httptest.NewRecorder()
	inj.HTTP(ok).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 204 {
		t.Fatalf("HTTP = %d", rec.Code)
	}
	out, err := inj.UnaryServerInterceptor()(context.Background(), "in", &grpc.UnaryServerInfo{FullMethod: "/a.B/C"},
		func(ctx context.Context, req any) (any, error) { return req.(string) + "-out", nil })
	if out != "in-out" || err != nil {
		t.Fatalf("unary = %v, %v", out, err)
	}
	called := false
	err = inj.StreamServerInterceptor()(nil, nil, &grpc.StreamServerInfo{FullMethod: "/a.B/C"},
		func(any, grpc.ServerStream) error { called = true; return nil })
	if !called || err != nil {
		t.Fatalf("stream: called %v, %v", called, err)
	}
	if inj.Active() != nil || inj.Injected() != nil {
		t.Fatal("nil injector reports experiments")
	}
	inj.Close()
}

func TestConfigValidate(t *testing.T) {
	cli := &clientv3.Client{}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Cluster: "prod", Client: cli}, true},
		{"router", Config{Cluster: "prod", Client: cli, IDC: "IDC-A"}, true},
		{"no client", Config{Cluster: "prod"}, false},
		{"no cluster", Config{Client: cli}, false},
		{"bad cluster", Config{Cluster: "Prod", Client: cli}, false},
		{"negative backoff", Config{Cluster: "prod", Client: cli, RetryBackoff: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadConfig)) {
				t.Fatalf("Validate = %v", err)
			}
		})
	}
	if _, err := New(context.Background(), Config{Cluster: "prod"}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("New without a client = %v", err)
	}
}

type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header         { return w.h }
func (w discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w discardWriter) WriteHeader(int)             {}

// TestNoExperimentsNoAllocs: with nothing armed the middleware costs no
// allocation.
func TestNoExperimentsNoAllocs(t *testing.T) {
	inj := newUnstarted(Config{Cluster: "prod"})
	h := inj.HTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w, r := discardWriter{http.Header{}}, httptest.NewRequest("POST", "/v1/pay", nil)
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("HTTP: %v allocs per request", n)
	}
	unary := inj.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/a.B/C"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { _, _ = unary(ctx, nil, info, handler) }); n != 0 {
		t.Errorf("unary: %v allocs per call", n)
	}
}
