package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// testConfig routes /v1/ by header, query, cookie or path, in that order,
// and gRPC by x-user-id metadata.
func testConfig() gateway.Config {
	c := gateway.Local()
	c.HTTP.Routes = []gateway.Route{
		{Prefix: "/v1/", Keys: []gateway.KeySource{{Header: "X-User-Id"}, {Query: "user"}, {Cookie: "uid"}, {Path: "/v1/*/{key}"}}},
		{Prefix: "/", Keys: []gateway.KeySource{{Header: "X-User-Id"}}},
	}
	c.GRPC.Metadata = []string{"x-user-id"}
	c.GRPC.Methods = []gateway.MethodKey{{Method: "/cellkit.test.Echo/Get", Field: "1"}}
	return c
}

type reply struct {
	status int
	header http.Header
	entry  testsvc.Entry
	body   string
}

func (e *env) do(req *http.Request) reply {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	return e.readEntry(resp)
}

func (e *env) readEntry(resp *http.Response) reply {
	body, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(body, &r.entry)
	}
	return r
}

func (e *env) get(path string, hdr http.Header) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.httpAddr+path, nil)
	must(e.t, err)
	for k, v := range hdr {
		req.Header[k] = v
	}
	return e.do(req)
}

func TestHTTPKeySources(t *testing.T) {
	e := newEnv(t, testConfig())
	for _, owner := range []string{"a1", "b1"} {
		key := keyOf(t, owner)
		other := keyOf(t, map[string]string{"a1": "b1", "b1": "a1"}[owner])
		for _, tc := range []struct {
			name string
			path string
			hdr  http.Header
		}{
			// The path names the other cell's key: only the source tried first counts.
			{"header", "/v1/balance/" + other, http.Header{"X-User-Id": {key}}},
			{"query", "/v1/balance/" + other + "?user=" + url.QueryEscape(key), nil},
			{"cookie", "/v1/balance/" + other, http.Header{"Cookie": {"uid=" + key}}},
			{"path", "/v1/balance/" + key, nil},
		} {
			t.Run(owner+"/"+tc.name, func(t *testing.T) {
				r := e.get(tc.path, tc.hdr)
				if r.status != http.StatusOK || r.entry.Cell != owner {
					t.Fatalf("got %d %q served by %q, want 200 from %s", r.status, r.body, r.entry.Cell, owner)
				}
				last := e.cells[owner].seen()
				if got := last[len(last)-1]; got.key != key {
					t.Fatalf("backend saw cellkit-key %q, want %q", got.key, key)
				}
			})
		}
	}
	// A write with a body goes through too (and is buffered for replay).
	key := keyOf(t, "b1")
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.httpAddr+"/v1/credit/"+key+"?amount=5&requestId=r1", strings.NewReader(`{"note":"x"}`))
	if r := e.do(req); r.status != http.StatusOK || r.entry.Cell != "b1" || r.entry.Balance != 5 {
		t.Fatalf("credit: %d %s", r.status, r.body)
	}
	if got := e.metric("cellrouter_requests_total", map[string]string{"proto": "http", "cell": "b1", "outcome": "ok"}); got < 5 {
		t.Fatalf("requests_total{b1,ok} = %v, want >= 5", got)
	}
}

func TestHTTPNoKeyNoRoute(t *testing.T) {
	c := testConfig()
	c.HTTP.Routes = c.HTTP.Routes[:1] // only /v1/
	e := newEnv(t, c)
	r := e.get("/v1/", nil)
	if r.status != http.StatusBadRequest || r.header.Get("Cellkit-Code") != "NO_KEY" || !strings.Contains(r.body, "header X-User-Id") {
		t.Fatalf("no key: %d %v %s", r.status, r.header, r.body)
	}
	if r := e.get("/other", nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "no route") {
		t.Fatalf("no route: %d %s", r.status, r.body)
	}
}

func withKey(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func TestGRPCRoutesToOwner(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := ctxT(t)
	cli := testsvc.NewClient(e.cc)
	for _, owner := range []string{"a1", "b1"} {
		key := keyOf(t, owner)
		kctx := withKey(ctx, "x-user-id", key)
		ent, err := cli.Credit(kctx, key, 7, "req-"+owner)
		if err != nil || ent.Balance != 7 {
			t.Fatalf("credit %s: %+v %v", owner, ent, err)
		}
		bal, served, err := cli.Balance(kctx, key)
		if err != nil || served != owner || bal != 7 {
			t.Fatalf("balance of %s: %v from %q, %v; want 7 from %s", key, bal, served, err, owner)
		}
		// Server streaming.
		st, err := cli.Statement(kctx, key)
		if err != nil || len(st) != 1 || st[0].Cell != owner {
			t.Fatalf("statement: %+v %v", st, err)
		}
		// Bidi streaming, several messages each way.
		stream, err := e.cc.NewStream(kctx, &echoDesc.Streams[0], "/cellkit.test.Echo/Chat")
		must(t, err)
		for i := range 3 {
			must(t, stream.SendMsg(wrapperspb.String("m"+strconv.Itoa(i))))
			got := new(wrapperspb.StringValue)
			must(t, stream.RecvMsg(got))
			if want := owner + ":m" + strconv.Itoa(i); got.GetValue() != want {
				t.Fatalf("echo: %q, want %q", got.GetValue(), want)
			}
		}
		must(t, stream.CloseSend())
		if err := stream.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
			t.Fatalf("end of chat: %v", err)
		}
	}
	// No key: InvalidArgument naming the metadata key.
	_, _, err := cli.Balance(ctx, "x")
	if s := status.Convert(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "x-user-id") {
		t.Fatalf("no key: %v", err)
	}
}

// Forged cellkit-* headers and metadata from a client change nothing: the
// backend sees exactly the router's key and epoch, and the request goes to
// the owner of the real key.
func TestForgedCellkitHeadersHaveNoEffect(t *testing.T) {
	e := newEnv(t, testConfig())
	epoch := strconv.FormatUint(e.gw.Watcher().Table().Epoch(), 10)
	mine, victim := keyOf(t, "a1"), keyOf(t, "b1")

	t.Run("http", func(t *testing.T) {
		r := e.get("/v1/balance/"+mine, http.Header{
			"X-User-Id":               {mine},
			"Cellkit-Key":             {victim},
			"Cellkit-Epoch":           {"999999"},
			"Cellkit-Owner":           {"b1"},
			"Cellkit-Cell":            {"b1"},
			"Cellkit-Code":            {"WRONG_CELL"},
			"Cellkit-Idempotency-Key": {"idem-1"},
		})
		if r.status != http.StatusOK || r.entry.Cell != "a1" {
			t.Fatalf("got %d %s, want 200 from a1", r.status, r.body)
		}
		for _, s := range e.cells["b1"].seen() {
			if s.proto == "http" {
				t.Fatalf("b1 received a request: %+v", s)
			}
		}
		got := e.cells["a1"].seen()
		s := got[len(got)-1]
		if s.key != mine || len(s.headers.Values("Cellkit-Key")) != 1 || len(s.epochs) != 1 || s.epochs[0] != epoch {
			t.Fatalf("backend saw key %v epochs %v, want only %q and %q", s.headers.Values("Cellkit-Key"), s.epochs, mine, epoch)
		}
		for _, h := range []string{"Cellkit-Owner", "Cellkit-Cell", "Cellkit-Code"} {
			if v := s.headers.Values(h); len(v) > 0 {
				t.Fatalf("forged %s reached the backend: %v", h, v)
			}
		}
		if v := s.headers.Get("Cellkit-Idempotency-Key"); v != "idem-1" {
			t.Fatalf("idempotency key %q, want it passed through", v)
		}
	})

	t.Run("header injection", func(t *testing.T) {
		r := e.get("/v1/balance/x?user="+url.QueryEscape("k1\r\nX-Evil: 1"), nil)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "control character") {
			t.Fatalf("got %d %s, want 400 for a key with a control character", r.status, r.body)
		}
		for _, b := range e.cells {
			for _, s := range b.seen() {
				if s.headers.Get("X-Evil") != "" {
					t.Fatalf("a key split the request's headers: %v", s.headers)
				}
			}
		}
	})

	t.Run("grpc", func(t *testing.T) {
		ctx := withKey(ctxT(t), "x-user-id", mine, "cellkit-key", victim, "cellkit-epoch", "999999", "cellkit-owner", "b1")
		_, served, err := testsvc.NewClient(e.cc).Balance(ctx, mine)
		if err != nil || served != "a1" {
			t.Fatalf("served by %q, %v; want a1", served, err)
		}
		got := e.cells["a1"].seen()
		s := got[len(got)-1]
		if v := s.md.Get("cellkit-key"); len(v) != 1 || v[0] != mine {
			t.Fatalf("backend saw cellkit-key %v, want [%s]", v, mine)
		}
		if v := s.md.Get("cellkit-epoch"); len(v) != 1 || v[0] != epoch {
			t.Fatalf("backend saw cellkit-epoch %v, want [%s]", v, epoch)
		}
		if v := s.md.Get("cellkit-owner"); len(v) != 0 {
			t.Fatalf("forged cellkit-owner reached the backend: %v", v)
		}
	})
}

// A stale router meets a guard with a newer map: the guard refuses with
// WRONG_CELL, the router catches up with that epoch and retries once on the
// new owner; the client sees success.
func TestStaleRouterRetriesOnce(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	slot := e.table().Slot(key)

	for i, proto := range []string{"http", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			from, to := "a1", "b1"
			if i == 1 {
				from, to = "b1", "a1"
			}
			e.src.Pause()
			resumed := func(error) { e.src.Resume() }
			e.cells[from].onRefuse.Store(&resumed)
			defer e.cells[from].onRefuse.Store(nil)
			before := e.gw.Watcher().Table().Epoch()
			next := e.update("move the slot", func(tb *router.Table) error { return assign(tb, slot, to) })
			e.waitCellsEpoch(next.Epoch())
			if e.gw.Watcher().Table().Epoch() != before {
				t.Fatal("the gateway is not stale")
			}
			refused := e.cells[from].refused.Load()
			switch proto {
			case "http":
				r := e.get("/v1/balance/"+key, nil)
				if r.status != http.StatusOK || r.entry.Cell != to {
					t.Fatalf("got %d %s, want 200 from %s", r.status, r.body, to)
				}
			case "grpc":
				_, served, err := testsvc.NewClient(e.cc).Balance(withKey(ctxT(t), "x-user-id", key), key)
				if err != nil || served != to {
					t.Fatalf("served by %q, %v; want %s", served, err, to)
				}
			}
			if got := e.cells[from].refused.Load() - refused; got != 1 {
				t.Fatalf("%s refused %d requests, want 1", from, got)
			}
			if got := e.metric("cellrouter_redirects_total", map[string]string{"proto": proto, "code": "WRONG_CELL"}); got != 1 {
				t.Fatalf("redirects{%s} = %v, want 1", proto, got)
			}
		})
	}
}

// When the router's map does not reach the refusing guard's epoch in time,
// it retries on the owner the guard named.
func TestStaleRouterUsesNamedOwner(t *testing.T) {
	c := testConfig()
	c.RedirectWait = gateway.Duration(50 * 1e6) // 50ms
	e := newEnv(t, c)
	key := keyOf(t, "a1")
	e.src.Pause()
	t.Cleanup(e.src.Resume)
	next := e.update("move the slot", func(tb *router.Table) error { return assign(tb, e.table().Slot(key), "b1") })
	e.waitCellsEpoch(next.Epoch())
	r := e.get("/v1/balance/"+key, nil)
	if r.status != http.StatusOK || r.entry.Cell != "b1" {
		t.Fatalf("got %d %s, want 200 from b1", r.status, r.body)
	}
	got := e.cells["b1"].seen()
	if s := got[len(got)-1]; s.epochs[0] != strconv.FormatUint(next.Epoch(), 10) {
		t.Fatalf("retry stamped epoch %v, want the guard's %d", s.epochs, next.Epoch())
	}
}

// A refusal that cannot be replayed (a streamed body larger than the
// replay bound) reaches the client as the guard gave it.
func TestRefusalNotReplayable(t *testing.T) {
	c := testConfig()
	c.HTTP.MaxReplayBody = 16
	e := newEnv(t, c)
	key := keyOf(t, "a1")
	e.src.Pause()
	t.Cleanup(e.src.Resume)
	next := e.update("move the slot", func(tb *router.Table) error { return assign(tb, e.table().Slot(key), "b1") })
	e.waitCellsEpoch(next.Epoch())
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.httpAddr+"/v1/credit/"+key+"?amount=1&requestId=big", strings.NewReader(strings.Repeat("x", 100)))
	r := e.do(req)
	if r.status != http.StatusMisdirectedRequest || r.header.Get("Cellkit-Code") != "WRONG_CELL" || r.header.Get("Cellkit-Owner") != "b1" {
		t.Fatalf("got %d %v %s, want 421 WRONG_CELL owner b1", r.status, r.header, r.body)
	}
}

func assign(tb *router.Table, slot int, cellID string) error {
	return tb.Assign(router.SlotRange{First: slot, Last: slot}, cellID)
}

// A bidi stream that a guard refuses is replayed on the new owner: the
// messages the client sent before the refusal were kept, and nothing had
// reached the client yet.
func TestStaleRouterReplaysStream(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	e.src.Pause()
	resumed := func(error) { e.src.Resume() }
	e.cells["a1"].onRefuse.Store(&resumed)
	next := e.update("move the slot", func(tb *router.Table) error { return assign(tb, e.table().Slot(key), "b1") })
	e.waitCellsEpoch(next.Epoch())

	stream, err := e.cc.NewStream(withKey(ctxT(t), "x-user-id", key), &echoDesc.Streams[0], "/cellkit.test.Echo/Chat")
	must(t, err)
	must(t, stream.SendMsg(wrapperspb.String("m0")))
	must(t, stream.SendMsg(wrapperspb.String("m1")))
	for _, want := range []string{"b1:m0", "b1:m1"} {
		got := new(wrapperspb.StringValue)
		must(t, stream.RecvMsg(got))
		if got.GetValue() != want {
			t.Fatalf("got %q, want %q", got.GetValue(), want)
		}
	}
	must(t, stream.SendMsg(wrapperspb.String("m2")))
	got := new(wrapperspb.StringValue)
	must(t, stream.RecvMsg(got))
	if got.GetValue() != "b1:m2" {
		t.Fatalf("after the replay: %q", got.GetValue())
	}
	must(t, stream.CloseSend())
	if err := stream.RecvMsg(got); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	if n := e.cells["a1"].refused.Load(); n != 1 {
		t.Fatalf("a1 refused %d, want 1", n)
	}
}

// A method whose key is a field of its request message routes by that
// field, whatever the metadata says.
func TestGRPCKeyFromField(t *testing.T) {
	e := newEnv(t, testConfig())
	for _, owner := range []string{"a1", "b1"} {
		key := keyOf(t, owner)
		other := keyOf(t, map[string]string{"a1": "b1", "b1": "a1"}[owner])
		out := new(wrapperspb.StringValue)
		err := e.cc.Invoke(withKey(ctxT(t), "x-user-id", other), "/cellkit.test.Echo/Get", wrapperspb.String(key), out)
		if err != nil || out.GetValue() != owner+":"+key {
			t.Fatalf("got %q, %v; want %s:%s", out.GetValue(), err, owner, key)
		}
	}
	err := e.cc.Invoke(ctxT(t), "/cellkit.test.Echo/Get", &wrapperspb.StringValue{}, new(wrapperspb.StringValue))
	if s := status.Convert(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "request field 1") {
		t.Fatalf("no key: %v", err)
	}
}

// TestGRPCInterceptor: Options.GRPCInterceptor sees every proxied call,
// with its method, before the call goes to a cell; what it refuses never
// reaches one.
func TestGRPCInterceptor(t *testing.T) {
	var seen sync.Map
	e := newEnvOpts(t, testConfig(), func(o *gateway.Options) {
		o.GRPCInterceptor = func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			seen.Store(info.FullMethod, true)
			if strings.HasSuffix(info.FullMethod, "/Credit") {
				return status.Error(codes.Unavailable, "injected at the router")
			}
			return h(srv, ss)
		}
	})
	cli := testsvc.NewClient(e.cc)
	key := keyOf(t, "a1")
	kctx := withKey(ctxT(t), "x-user-id", key)
	if _, err := cli.Credit(kctx, key, 5, "req-x"); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "injected at the router") {
		t.Fatalf("credit through a refusing interceptor: %v", err)
	}
	bal, served, err := cli.Balance(kctx, key)
	if err != nil || served != "a1" || bal != 0 {
		t.Fatalf("balance: %v from %q, %v; want 0 from a1 (the refused credit never reached the cell)", bal, served, err)
	}
	for _, m := range []string{testsvc.CreditMethod, testsvc.BalanceMethod} {
		if _, ok := seen.Load(m); !ok {
			t.Errorf("interceptor did not see %s", m)
		}
	}
}
