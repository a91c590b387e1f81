package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait; tests poll, never sleep to wait.
const testTimeout = 20 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// --- a map source driven by the test ---

// memSource is a router.Source holding one table; Set publishes a new one
// to every watch. Loads fail while loadErr is set (fault injection).
type memSource struct {
	mu      sync.Mutex
	t       *router.Table
	rev     int64
	changed chan struct{}
	loadErr error
	wg      sync.WaitGroup
}

var _ router.Source = (*memSource)(nil)

func newMemSource(t *router.Table) *memSource {
	return &memSource{t: t.Seal(), rev: 1, changed: make(chan struct{})}
}

func (s *memSource) Set(t *router.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t = t.Seal()
	s.rev++
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *memSource) FailLoads(err error) {
	s.mu.Lock()
	s.loadErr = err
	s.mu.Unlock()
}

func (s *memSource) Load(ctx context.Context) (*router.Table, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return nil, 0, s.loadErr
	}
	return s.t, s.rev, nil
}

func (s *memSource) Watch(ctx context.Context, rev int64) <-chan router.Event {
	out := make(chan router.Event)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for {
			s.mu.Lock()
			t, r, ch := s.t, s.rev, s.changed
			s.mu.Unlock()
			if r > rev {
				select {
				case out <- router.Event{Table: t, Revision: r}:
					rev = r
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// startWatcher follows src until the test ends.
func startWatcher(t *testing.T, src router.Source) *router.Watcher {
	t.Helper()
	w := router.NewWatcher(src, router.WatcherConfig{})
	must(t, w.Start(context.Background()))
	t.Cleanup(w.Close)
	return w
}

// --- maps ---

// baseMap splits slotCount slots evenly between cells, in order, at epoch 1.
func baseMap(t testing.TB, cells ...string) *router.Table {
	t.Helper()
	tb, err := router.NewTable(1024)
	must(t, err)
	per := 1024 / len(cells)
	for i, c := range cells {
		must(t, tb.AddCell(router.Cell{ID: c, IDC: "IDC-" + c}))
		last := (i+1)*per - 1
		if i == len(cells)-1 {
			last = 1023
		}
		must(t, tb.Assign(router.SlotRange{First: i * per, Last: last}, c))
	}
	tb.SetEpoch(1)
	must(t, tb.Validate())
	return tb.Seal()
}

// next returns a mutable copy of tb at the following epoch, changed by fn.
func next(t testing.TB, tb *router.Table, fn func(*router.Table) error) *router.Table {
	t.Helper()
	n := tb.Clone()
	n.SetEpoch(tb.Epoch() + 1)
	must(t, fn(n))
	must(t, n.Validate())
	return n.Seal()
}

// keysOf returns n keys owned by cell in tb.
func keysOf(t testing.TB, tb *router.Table, cell string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; len(out) < n; i++ {
		if i > 1_000_000 {
			t.Fatalf("no keys for cell %s", cell)
		}
		k := "u" + strconv.Itoa(i)
		if o := tb.Owner(k); o != nil && o.ID == cell {
			out = append(out, k)
		}
	}
	return out
}

func slotOf(tb *router.Table, key string) router.SlotRange {
	s := tb.Slot(key)
	return router.SlotRange{First: s, Last: s}
}

// moveSlot moves key's slot to cell (unfrozen).
func moveSlot(t testing.TB, tb *router.Table, key, cell string) *router.Table {
	return next(t, tb, func(n *router.Table) error {
		if err := n.Assign(slotOf(n, key), cell); err != nil {
			return err
		}
		return n.Unfreeze(slotOf(n, key))
	})
}

// freezeSlot freezes key's slot.
func freezeSlot(t testing.TB, tb *router.Table, key string) *router.Table {
	return next(t, tb, func(n *router.Table) error { return n.Freeze(slotOf(n, key), "cut-1") })
}

// --- cells: testsvc behind the real guard adapters ---

// attempt is what an instance's guard saw of one request.
type attempt struct {
	Instance, Method, Key, Idem string
	Epoch                       uint64
	Code                        cell.Code // "" when admitted
}

// instance is one running instance of a cell: testsvc behind
// cell/grpcguard and cell/httpguard, with a recorder in front of each guard
// and a fault injector behind it.
type instance struct {
	cell, id string
	books    *testsvc.Server // shared by the cell's instances, like its database
	guard    *cell.Guard
	grpcAddr string
	httpAddr string

	mu       sync.Mutex
	attempts []attempt
	// fault, if set, runs after an admitted request's handler and may
	// replace its answer with an error (the write stays applied).
	fault atomic.Pointer[func(method string) error]
}

func (in *instance) record(a attempt) {
	in.mu.Lock()
	in.attempts = append(in.attempts, a)
	in.mu.Unlock()
}

func (in *instance) seen() []attempt {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]attempt(nil), in.attempts...)
}

func (in *instance) runFault(method string) error {
	if f := in.fault.Load(); f != nil {
		return (*f)(method)
	}
	return nil
}

// pendingKey carries a request's *pending from the recorder in front of the
// guard to the handler behind it (the guards derive the handler's context
// from the request's).
type pendingKey struct{}

// pending is a request the recorder saw arrive. The handler side records it
// as admitted, at admission; if the guard refuses it, the recorder records
// the refusal's code.
type pending struct {
	a        attempt
	admitted bool
}

func (in *instance) arrive(ctx context.Context, method, key, epochS, idem string) (context.Context, *pending) {
	epoch, _ := strconv.ParseUint(epochS, 10, 64) // the guard refuses a bad one
	p := &pending{a: attempt{Instance: in.id, Method: method, Key: key, Idem: idem, Epoch: epoch}}
	return context.WithValue(ctx, pendingKey{}, p), p
}

// admitted records the request of ctx as admitted.
func (in *instance) admitted(ctx context.Context) {
	if p, ok := ctx.Value(pendingKey{}).(*pending); ok {
		p.admitted = true
		in.record(p.a)
	}
}

// refused records p with the guard's code, unless it was admitted.
func (in *instance) refused(p *pending, code cell.Code) {
	if !p.admitted {
		p.a.Code = code
		in.record(p.a)
	}
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

func grpcCode(err error) cell.Code { return cell.CodeOf(wire.FromGRPC(err)) }

// recordUnary and recordStream sit in front of grpcguard.
func (in *instance) recordUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ctx, p := in.arrive(ctx, info.FullMethod, first(md, wire.KeyMD), first(md, wire.EpochMD), first(md, wire.IdempotencyMD))
	resp, err := handler(ctx, req)
	in.refused(p, grpcCode(err))
	return resp, err
}

func (in *instance) recordStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	ctx, p := in.arrive(ss.Context(), info.FullMethod, first(md, wire.KeyMD), first(md, wire.EpochMD), first(md, wire.IdempotencyMD))
	err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	in.refused(p, grpcCode(err))
	return err
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// behindUnary and behindStream run behind grpcguard, for admitted requests.
func (in *instance) behindUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	in.admitted(ctx)
	resp, err := handler(ctx, req)
	if err == nil {
		if ferr := in.runFault(info.FullMethod); ferr != nil {
			return nil, wire.GRPCStatus(ferr).Err()
		}
	}
	return resp, err
}

func (in *instance) behindStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	in.admitted(ss.Context())
	return handler(srv, ss)
}

// recordHTTP sits in front of httpguard; behindHTTP behind it.
func (in *instance) recordHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, p := in.arrive(r.Context(), r.Method, r.Header.Get(wire.KeyMD), r.Header.Get(wire.EpochMD), r.Header.Get(wire.IdempotencyMD))
		next.ServeHTTP(w, r.WithContext(ctx))
		in.refused(p, cell.Code(w.Header().Get(wire.CodeMD)))
	})
}

func (in *instance) behindHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.admitted(r.Context())
		if ferr := in.runFault(r.Method); ferr != nil {
			next.ServeHTTP(httptest.NewRecorder(), r) // applied, answer lost
			wire.WriteHTTP(w, ferr)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cluster is a set of cells, each with instances serving gRPC and HTTP on
// 127.0.0.1, all guarded with tables the test applies (the guards' view of
// the map, separate from the clients').
type cluster struct {
	t     *testing.T
	insts []*instance
	books map[string]*testsvc.Server
	disc  *router.StaticDiscovery
}

// startCluster starts n instances of each cell, guards at table tb.
func startCluster(t *testing.T, tb *router.Table, n int, cells ...string) *cluster {
	t.Helper()
	cl := &cluster{t: t, books: map[string]*testsvc.Server{}, disc: &router.StaticDiscovery{}}
	var list []router.Instance
	for _, c := range cells {
		cl.books[c] = testsvc.NewServer(c)
		for i := range n {
			in := cl.startInstance(tb, c, fmt.Sprintf("%s-%d", c, i))
			list = append(list, router.Instance{Cell: c, ID: in.id, GRPCAddr: in.grpcAddr, HTTPAddr: in.httpAddr})
		}
	}
	cl.disc.Set(list)
	return cl
}

func (cl *cluster) startInstance(tb *router.Table, c, id string) *instance {
	t := cl.t
	t.Helper()
	g, err := cell.NewGuard(cell.Config{Cell: c, Instance: id, StaleWait: 2 * time.Second, FrozenRetryAfter: 10 * time.Millisecond}, tb, nil)
	must(t, err)
	in := &instance{cell: c, id: id, books: cl.books[c], guard: g}
	gg, err := grpcguard.New(g, grpcguard.Config{Methods: map[string]grpcguard.Method{
		testsvc.CreditMethod:    {Kind: cell.Write},
		testsvc.BalanceMethod:   {Kind: cell.Read},
		testsvc.StatementMethod: {Kind: cell.Read},
	}})
	must(t, err)
	hg, err := httpguard.New(g, httpguard.Config{Routes: []httpguard.Route{
		{Pattern: "POST /v1/credit/{key}", Kind: cell.Write},
		{Pattern: "GET /v1/balance/{key}", Kind: cell.Read},
	}})
	must(t, err)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(in.recordUnary, gg.Unary(), in.behindUnary),
		grpc.ChainStreamInterceptor(in.recordStream, gg.Stream(), in.behindStream))
	in.books.Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	in.grpcAddr = l.Addr().String()
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	hs := httptest.NewServer(in.recordHTTP(hg.Handler(in.behindHTTP(in.books.HTTPHandler()))))
	t.Cleanup(hs.Close)
	in.httpAddr = hs.Listener.Addr().String()
	cl.insts = append(cl.insts, in)
	return in
}

// apply gives every guard table tb.
func (cl *cluster) apply(tb *router.Table) {
	for _, in := range cl.insts {
		in.guard.Apply(tb)
	}
}

func (cl *cluster) instancesOf(c string) []*instance {
	var out []*instance
	for _, in := range cl.insts {
		if in.cell == c {
			out = append(out, in)
		}
	}
	return out
}

// attempts returns every attempt any instance saw for key.
func (cl *cluster) attempts(key string) []attempt {
	var out []attempt
	for _, in := range cl.insts {
		for _, a := range in.seen() {
			if a.Key == key {
				out = append(out, a)
			}
		}
	}
	return out
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// --- clients ---

type sdk struct {
	c   *client.Client
	src *memSource
	w   *router.Watcher
	reg *prometheus.Registry
}

func isCredit(m string) bool { return m == testsvc.CreditMethod }

// newSDK returns a client whose map comes from its own source, starting at tb.
func newSDK(t *testing.T, tb *router.Table, disc router.Discovery, tweak func(*client.Config)) *sdk {
	t.Helper()
	src := newMemSource(tb)
	t.Cleanup(src.wg.Wait) // after the watcher closed
	w := startWatcher(t, src)
	cfg := client.LocalConfig(w, disc)
	cfg.IsWrite = isCredit
	if tweak != nil {
		tweak(&cfg)
	}
	c, reg := mustClient(t, cfg)
	return &sdk{c: c, src: src, w: w, reg: reg}
}

func mustClient(t *testing.T, cfg client.Config) (*client.Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := client.New(cfg, reg)
	must(t, err)
	return c, reg
}

func (s *sdk) dial(t *testing.T) *testsvc.Client {
	t.Helper()
	cc, err := s.c.Dial("ledger")
	must(t, err)
	t.Cleanup(func() { cc.Close() })
	return testsvc.NewClient(cc)
}

// counter reads cellkit_client_requests_total{cell, outcome}.
func (s *sdk) requests(cell, outcome string) float64 {
	return metricValue(s.reg, "cellkit_client_requests_total", map[string]string{"cell": cell, "outcome": outcome})
}

// metricValue reads one counter or gauge sample from reg (0 if absent).
func metricValue(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

var _ = errors.New

func grpcWaitForReady() grpc.CallOption { return grpc.WaitForReady(true) }
