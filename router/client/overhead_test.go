package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"

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

// BenchmarkInterceptorOverhead is the SDK's own work per unary call, without
// the network: the interceptor (key, route, breaker, stamps, metrics) and a
// pick from the balancer's ready set.
func BenchmarkInterceptorOverhead(b *testing.B) {
	tb, _ := router.NewTable(1024)
	tb.AddCell(router.Cell{ID: "a1", IDC: "A"})
	tb.Assign(router.SlotRange{First: 0, Last: 1023}, "a1")
	tb.SetEpoch(1)
	w := router.NewWatcher(nopSource{tb.Seal()}, router.WatcherConfig{})
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer w.Close()
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
