package client_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/grpcguard"
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
	return benchLedger(b)
}

// benchLedger serves a testsvc ledger of cell a1 on loopback with opts
// until the benchmark ends, and returns its address.
func benchLedger(b *testing.B, opts ...grpc.ServerOption) string {
	b.Helper()
	gs := grpc.NewServer(opts...)
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

// BenchmarkUnaryInterleaved compares an SDK-routed call with a direct call
// to the same plain server (compareUnary).
func BenchmarkUnaryInterleaved(b *testing.B) {
	compareUnary(b, benchServer(b))
}

// BenchmarkUnaryGuarded is BenchmarkUnaryInterleaved against a realistic
// cell: the server is behind a real cell.Guard and grpcguard, which owns
// every slot and reads the key from the request (benchGuardedServer). The
// direct calls carry no cellkit metadata, as an app that knows the cell's
// address would call it; the guard admits them by the request's key. The
// SDK's calls carry its stamps, which the guard checks too (the epoch).
func BenchmarkUnaryGuarded(b *testing.B) {
	compareUnary(b, benchGuardedServer(b))
}

// benchGuardedServer is one ledger instance of cell a1 behind its guard,
// built as harness_test's startInstance builds them, with the key read from
// the request's "key" field.
func benchGuardedServer(b *testing.B) string {
	b.Helper()
	g, err := cell.NewGuard(cell.Config{Cell: "a1", Instance: "a1-0"}, baseMap(b, "a1"), nil)
	must(b, err)
	gg, err := grpcguard.New(g, grpcguard.Config{Methods: map[string]grpcguard.Method{
		testsvc.CreditMethod:    {Kind: cell.Write, Key: requestKey},
		testsvc.BalanceMethod:   {Kind: cell.Read, Key: requestKey},
		testsvc.StatementMethod: {Kind: cell.Read, Key: requestKey},
	}})
	must(b, err)
	return benchLedger(b, gg.ServerOptions()...)
}

// requestKey is the grpcguard.KeyFunc of the ledger's methods: the
// request's "key" field.
func requestKey(req any) (string, error) {
	m, ok := req.(*structpb.Struct)
	if !ok {
		return "", fmt.Errorf("request %T is not a ledger request", req)
	}
	return m.GetFields()["key"].GetStringValue(), nil
}

// benchArm is one way of calling the benchmark's server, and the time its
// calls took.
type benchArm struct {
	ledger *testsvc.Client
	ctx    context.Context
	total  time.Duration
}

func (a *benchArm) call(b *testing.B) {
	t0 := time.Now()
	_, served, err := a.ledger.Balance(a.ctx, "u1")
	a.total += time.Since(t0)
	if err != nil || served != "a1" {
		b.Fatalf("balance: served by %q, %v", served, err)
	}
}

// compareUnary reads a balance from the server at addr five ways, one call
// each per round, in a fresh random order every round:
//
//   - direct: a plain connection, no cellkit metadata;
//   - control: a second, independent plain connection, called like direct:
//     control/direct is what the harness alone makes of two identical
//     arms (its noise, and any bias between connections);
//   - keyed: a plain connection whose calls carry cellkit-key, as a caller
//     that knows the cell's address must send it to a guarded method
//     without a key extractor (the guard's default key source);
//   - stamped: a plain connection whose calls carry cellkit-key and
//     cellkit-epoch, the SDK's two stamps, added by hand: what the wire
//     contract costs any caller, without the SDK's routing;
//   - sdk: a connection dialled through the SDK (cellkit:///ledger, one
//     cell a1 owning every slot), whose calls carry its stamps. Its
//     context (WithKey) is made once, as the others' is.
//
// Interleaving per call cancels the load drift of a shared machine, which
// separate benchmarks run minutes apart pick up; shuffling the order every
// round cancels any advantage of calling first or after a given arm. It
// reports the mean latency of direct, control and sdk calls (ns/op counts a
// round: five calls) and the ratios: sdk/direct is the SDK against a bare
// call, sdk/keyed against a call carrying the key a guard needs, and
// sdk/stamped the SDK's routing alone.
func compareUnary(b *testing.B, addr string) {
	b.Helper()
	direct := &benchArm{ledger: directLedger(b, addr), ctx: context.Background()}
	control := &benchArm{ledger: directLedger(b, addr), ctx: context.Background()}
	keyed := &benchArm{ledger: directLedger(b, addr), ctx: metadata.AppendToOutgoingContext(context.Background(), wire.KeyMD, "u1")}
	stamped := &benchArm{ledger: directLedger(b, addr), ctx: metadata.AppendToOutgoingContext(context.Background(), wire.KeyMD, "u1", wire.EpochMD, "1")}
	sdk := &benchArm{ledger: sdkLedger(b, addr), ctx: client.WithKey(context.Background(), "u1")}
	arms := [...]*benchArm{direct, control, keyed, stamped, sdk}
	for range 100 { // connect, and warm up both ends of every connection
		for _, a := range arms {
			a.call(b)
		}
	}
	for _, a := range arms {
		a.total = 0
	}
	rng := rand.New(rand.NewPCG(1, 2)) // the same orders in every run
	n := 0
	for b.Loop() {
		rng.Shuffle(len(arms), func(i, j int) { arms[i], arms[j] = arms[j], arms[i] })
		for _, a := range arms {
			a.call(b)
		}
		n++
	}
	perCall := func(a *benchArm) float64 { return float64(a.total.Nanoseconds()) / float64(n) }
	b.ReportMetric(perCall(direct), "direct-ns/call")
	b.ReportMetric(perCall(control), "control-ns/call")
	b.ReportMetric(perCall(sdk), "sdk-ns/call")
	b.ReportMetric(float64(sdk.total)/float64(direct.total), "sdk/direct")
	b.ReportMetric(float64(control.total)/float64(direct.total), "control/direct")
	b.ReportMetric(float64(stamped.total)/float64(direct.total), "stamped/direct")
	b.ReportMetric(float64(sdk.total)/float64(keyed.total), "sdk/keyed")
	b.ReportMetric(float64(sdk.total)/float64(stamped.total), "sdk/stamped")
}
