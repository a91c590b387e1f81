package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// benchServer is one plain ledger instance (no guard): both benchmarks call
// the same server, so the difference is the SDK's routing (interceptor,
// picker, breaker, metrics, and the metadata it adds to each call).
func benchServer(b *testing.B) string {
	b.Helper()
	gs := grpc.NewServer()
	testsvc.NewServer("a1").Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(b, err)
	go gs.Serve(l)
	b.Cleanup(gs.Stop)
	return l.Addr().String()
}

func directLedger(b *testing.B, addr string) *testsvc.Client {
	b.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(b, err)
	b.Cleanup(func() { cc.Close() })
	return testsvc.NewClient(cc)
}

// sdkLedger dials addr through the SDK: one cell, a1, owns every slot.
func sdkLedger(b *testing.B, addr string) *testsvc.Client {
	b.Helper()
	disc := &router.StaticDiscovery{}
	disc.Set([]router.Instance{{Cell: "a1", ID: "a1-0", GRPCAddr: addr}})
	w := router.NewWatcher(fixedSource{baseMap(b, "a1")}, router.WatcherConfig{})
	must(b, w.Start(context.Background()))
	b.Cleanup(w.Close)
	cfg := client.DefaultConfig(w, disc)
	cfg.IsWrite = isCredit
	c, err := client.New(cfg, nil)
	must(b, err)
	cc, err := c.Dial("ledger")
	must(b, err)
	b.Cleanup(func() { cc.Close() })
	return testsvc.NewClient(cc)
}

func BenchmarkDirectUnary(b *testing.B) {
	ledger := directLedger(b, benchServer(b))
	ctx := context.Background()
	if _, _, err := ledger.Balance(ctx, "u1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ledger.Balance(ctx, "u1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSDKUnary(b *testing.B) {
	ledger := sdkLedger(b, benchServer(b))
	ctx := client.WithKey(context.Background(), "u1")
	if _, _, err := ledger.Balance(ctx, "u1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ledger.Balance(ctx, "u1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirectUnaryStamped is BenchmarkDirectUnary with the two headers
// the SDK adds to a read (cellkit-key, cellkit-epoch): the wire part of the
// SDK's cost, which any cell-aware caller pays.
func BenchmarkDirectUnaryStamped(b *testing.B) {
	addr := benchServer(b)
	ledger := directLedger(b, addr)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c := metadata.AppendToOutgoingContext(ctx, wire.KeyMD, "u1", wire.EpochMD, "1")
		if _, _, err := ledger.Balance(c, "u1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnaryInterleaved alternates a direct call and an SDK call to the
// same server in every iteration and reports each one's mean latency and
// their ratio (sdk/direct): on a shared machine, interleaving cancels the
// load drift that separate benchmarks run minutes apart pick up.
func BenchmarkUnaryInterleaved(b *testing.B) {
	addr := benchServer(b)
	direct, sdk := directLedger(b, addr), sdkLedger(b, addr)
	dctx, sctx := context.Background(), client.WithKey(context.Background(), "u1")
	timed := func(l *testsvc.Client, ctx context.Context) time.Duration {
		t0 := time.Now()
		if _, _, err := l.Balance(ctx, "u1"); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	timed(direct, dctx)
	timed(sdk, sctx)
	var td, ts time.Duration
	n := 0
	for b.Loop() {
		if n%2 == 0 { // alternate which goes first
			td += timed(direct, dctx)
			ts += timed(sdk, sctx)
		} else {
			ts += timed(sdk, sctx)
			td += timed(direct, dctx)
		}
		n++
	}
	b.ReportMetric(float64(td.Nanoseconds())/float64(n), "direct-ns/call")
	b.ReportMetric(float64(ts.Nanoseconds())/float64(n), "sdk-ns/call")
	b.ReportMetric(float64(ts)/float64(td), "sdk/direct")
}
