package client

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

type nopSource struct{ t *router.Table }

func (s nopSource) Load(context.Context) (*router.Table, int64, error) { return s.t, 1, nil }
func (s nopSource) Watch(ctx context.Context, _ int64) <-chan router.Event {
	ch := make(chan router.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

type fakeSubConn struct{ balancer.SubConn }

// oneCellWatcher is a started watcher on a map where cell a1 owns all 1024
// slots, closed when the benchmark ends.
func oneCellWatcher(b *testing.B) *router.Watcher {
	tb, _ := router.NewTable(1024)
	tb.AddCell(router.Cell{ID: "a1", IDC: "A"})
	tb.Assign(router.SlotRange{First: 0, Last: 1023}, "a1")
	tb.SetEpoch(1)
	w := router.NewWatcher(nopSource{tb.Seal()}, router.WatcherConfig{})
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Close)
	return w
}

// BenchmarkInterceptorOverhead is the SDK's own work per unary call, without
// the network: the interceptor (key, route, breaker, stamps, metrics) and a
// pick from the balancer's ready set.
func BenchmarkInterceptorOverhead(b *testing.B) {
	w := oneCellWatcher(b)
	cfg := DefaultConfig(w, &router.StaticDiscovery{})
	cfg.IsWrite = func(string) bool { return false }
	c, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	bal := &cellBalancer{}
	bal.client.Store(c)
	bal.ready.Store(&readySet{cells: map[string]*readyCell{"a1": {ready: []balancer.SubConn{fakeSubConn{}, fakeSubConn{}}}}})
	p := &picker{b: bal}
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		_, err := p.Pick(balancer.PickInfo{FullMethodName: "/svc/Get", Ctx: ctx})
		return err
	}
	ctx := WithKey(context.Background(), "u1")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.unary(ctx, "/svc/Get", nil, nil, nil, invoker); err != nil {
			b.Fatal(err)
		}
	}
}

// ownTimer measures an interceptor's own time: outer runs before it and
// inner after it in the chain, so the time outer sees minus the time inner
// spends in grpc's invoker is the interceptor's (plus two calls and two
// clock reads, the same for every interceptor measured), for calls of one
// attempt.
type ownTimer struct {
	invoking, own time.Duration
}

func (o *ownTimer) outer(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	t0 := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	o.own += time.Since(t0) - o.invoking
	return err
}

func (o *ownTimer) inner(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	t0 := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	o.invoking = time.Since(t0)
	return err
}

// BenchmarkInterceptorLive is BenchmarkInterceptorOverhead on live
// connections: the SDK's interceptor's own time per call (sdk-ns/call; the
// pick, inside grpc's invoker, is not in it) next to that of an interceptor
// that only stamps the two headers every cell-aware call carries
// (stamp-ns/call), with a direct call to the same server after each: the
// caches are then as cold as a real call finds them, where the benchmark
// above keeps them hot.
func BenchmarkInterceptorLive(b *testing.B) {
	gs := grpc.NewServer()
	testsvc.NewServer("a1").Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(l)
	defer gs.Stop()
	addr := l.Addr().String()

	w := oneCellWatcher(b)
	disc := &router.StaticDiscovery{}
	disc.Set([]router.Instance{{Cell: "a1", ID: "a1-0", GRPCAddr: addr}})
	cfg := DefaultConfig(w, disc)
	cfg.IsWrite = func(string) bool { return false }
	c, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}

	stamp := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		key, _ := KeyFrom(ctx)
		ctx = metadata.AppendToOutgoingContext(ctx, wire.KeyMD, key, wire.EpochMD, "1")
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var sdkT, stampT ownTimer
	dial := func(target string, opts ...grpc.DialOption) *testsvc.Client {
		cc, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return testsvc.NewClient(cc)
	}
	sdk := dial(Scheme+":///ledger", grpc.WithResolvers(c.ResolverBuilder()), grpc.WithDefaultServiceConfig(serviceConfigJSON),
		grpc.WithChainUnaryInterceptor(sdkT.outer, c.unary, sdkT.inner))
	stamped := dial(addr, grpc.WithChainUnaryInterceptor(stampT.outer, stamp, stampT.inner))
	direct := dial(addr)

	ctx := WithKey(context.Background(), "u1")
	round := func() {
		for _, l := range []*testsvc.Client{sdk, direct, stamped, direct} {
			if _, _, err := l.Balance(ctx, "u1"); err != nil {
				b.Fatal(err)
			}
		}
	}
	for range 100 {
		round()
	}
	sdkT.own, stampT.own = 0, 0
	n := 0
	for b.Loop() {
		round()
		n++
	}
	b.ReportMetric(float64(sdkT.own.Nanoseconds())/float64(n), "sdk-ns/call")
	b.ReportMetric(float64(stampT.own.Nanoseconds())/float64(n), "stamp-ns/call")
}
