package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// One embedded etcd for the package; each test has its own cluster prefix.
var (
	etcd       etcdtest.Shared
	clusterSeq atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	etcd.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

// env is a cluster in etcd with two cells, a1 (slots 0-127) and b1
// (128-255), each a guarded testsvc backend, and a gateway in front.
type env struct {
	t     *testing.T
	store *etcdstore.Store
	disc  *router.StaticDiscovery
	cells map[string]*backend
	gw    *gateway.Gateway
	reg   *prometheus.Registry
	src   *pausableSource

	httpAddr, grpcAddr, adminAddr string
	client                        *http.Client
	cc                            *grpc.ClientConn
	stop                          context.CancelFunc
	served                        chan error
	edit                          func(*gateway.Options) // set by newEnvOpts
}

func newEnv(t *testing.T, cfg gateway.Config) *env {
	t.Helper()
	return newEnvOpts(t, cfg, nil)
}

// newEnvOpts is newEnv with edit applied to the gateway's options.
func newEnvOpts(t *testing.T, cfg gateway.Config, edit func(*gateway.Options)) *env {
	t.Helper()
	store := etcdtest.Store(t, etcd.Client(t), fmt.Sprintf("gw%d", clusterSeq.Add(1)))
	_, err := store.Create(ctxT(t), "test map", etcdtest.TwoCellMap(t, 256))
	must(t, err)

	e := &env{t: t, store: store, disc: &router.StaticDiscovery{}, cells: map[string]*backend{}, reg: prometheus.NewRegistry(), edit: edit}
	var list []router.Instance
	for _, c := range []string{"a1", "b1"} {
		b := startBackend(t, c, store)
		e.cells[c] = b
		list = append(list, router.Instance{Cell: c, ID: c + "-0", HTTPAddr: b.httpAddr, GRPCAddr: b.grpcAddr})
	}
	e.disc.Set(list)
	e.src = &pausableSource{Source: store}
	e.start(cfg)
	return e
}

func (e *env) start(cfg gateway.Config) {
	t := e.t
	opts := gateway.Options{
		Source: e.src, Discovery: e.disc, Registry: e.reg,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if e.edit != nil {
		e.edit(&opts)
	}
	gw, err := gateway.New(cfg, opts)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	must(t, gw.Start(ctx))
	ls := gateway.Listeners{HTTP: listen(t), GRPC: listen(t), Admin: listen(t)}
	e.gw, e.stop = gw, cancel
	e.httpAddr, e.grpcAddr, e.adminAddr = ls.HTTP.Addr().String(), ls.GRPC.Addr().String(), ls.Admin.Addr().String()
	e.served = make(chan error, 1)
	go func() { e.served <- gw.Serve(ctx, ls) }()
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	cc, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	e.cc = cc
	t.Cleanup(func() {
		cc.Close()
		e.client.CloseIdleConnections()
		cancel()
		select {
		case err := <-e.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return")
		}
		gw.Close()
	})
	eventually(t, "gateway ready", func() bool { return gw.Ready() == nil })
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	return l
}

// table is the current map in etcd.
func (e *env) table() *router.Table {
	tb, _, err := e.store.Load(ctxT(e.t))
	must(e.t, err)
	return tb
}

// keysIn returns n keys whose slot is slot.
func keysIn(t *testing.T, slot, n int) []string {
	t.Helper()
	var out []string
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("user-%d", i)
		if router.KeySlot(k, 256) == slot {
			out = append(out, k)
		}
		if i > 1_000_000 {
			t.Fatal("no keys found")
		}
	}
	return out
}

// keyOf returns a key owned by cell in the initial map.
func keyOf(t *testing.T, cellID string) string {
	t.Helper()
	if cellID == "a1" {
		return keysIn(t, 5, 1)[0]
	}
	return keysIn(t, 200, 1)[0]
}

// waitEpoch waits until the gateway routes with epoch at least e.
func (e *env) waitGatewayEpoch(epoch uint64) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("gateway at epoch %d", epoch), func() bool { return e.gw.Watcher().Table().Epoch() >= epoch })
}

func (e *env) waitCellsEpoch(epoch uint64) {
	e.t.Helper()
	for _, b := range e.cells {
		eventually(e.t, fmt.Sprintf("guard %s at epoch %d", b.cell, epoch), func() bool { return b.guard.Table().Epoch() >= epoch })
	}
}

// update changes the map in etcd and returns the new table.
func (e *env) update(why string, fn func(*router.Table) error) *router.Table {
	e.t.Helper()
	tb, err := e.store.Update(ctxT(e.t), why, fn)
	must(e.t, err)
	return tb
}

// metric returns the value of a counter or gauge with the given labels
// (summed over series that match).
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	must(e.t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// --- backends ---

// seen is what a backend received from the router.
type seen struct {
	proto   string
	key     string   // cellkit-key values
	epochs  []string // cellkit-epoch values
	headers http.Header
	md      metadata.MD
}

// backend is one cell: a testsvc ledger behind a guard that follows the
// map in etcd with its own watcher.
type backend struct {
	cell     string
	svc      *testsvc.Server
	guard    *cell.Guard
	httpAddr string
	grpcAddr string

	mu       sync.Mutex
	log      []seen
	refused  atomic.Int64
	onRefuse atomic.Pointer[func(error)]

	slowStarted chan struct{}
	slowRelease chan struct{}
}

func startBackend(t *testing.T, cellID string, store *etcdstore.Store) *backend {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &backend{cell: cellID, svc: testsvc.NewServer(cellID), slowStarted: make(chan struct{}, 16), slowRelease: make(chan struct{})}
	var guard atomic.Pointer[cell.Guard]
	w := router.NewWatcher(store, router.WatcherConfig{OnUpdate: func(_, t *router.Table) {
		if g := guard.Load(); g != nil {
			g.Apply(t)
		}
	}})
	must(t, w.Start(ctx))
	g, err := cell.NewGuard(cell.DefaultConfig(cellID, cellID+"-0"), w.Table(), nil)
	must(t, err)
	guard.Store(g)
	g.Apply(w.Table()) // an update between Start and Store
	b.guard = g

	mux := http.NewServeMux()
	mux.Handle("/v1/", b.svc.HTTPHandler())
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		b.slowStarted <- struct{}{}
		<-b.slowRelease
		_, _ = io.WriteString(w, "slow done by "+cellID)
	})
	mux.HandleFunc("/answer/", func(w http.ResponseWriter, r *http.Request) {
		// An answer with hop-by-hop headers, named and well-known, and
		// headers that must pass.
		h := w.Header()
		if r.URL.Path == "/answer/known" { // only well-known ones: forwarded raw
			h.Set("Connection", "keep-alive")
		} else {
			h.Set("Connection", "keep-alive, X-Secret")
			h.Set("X-Secret", "cell-only")
		}
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("X-Kept", "yes")
		h.Set("Date", "Sat, 21 Nov 2026 12:00:00 GMT")
		h.Set("Content-Length", "4")
		if r.URL.Path == "/answer/none" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, "body")
	})
	mux.HandleFunc("/plain/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("X-Cell-Said", "HELLO")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "plain")
	})
	mux.HandleFunc("/stream/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		<-b.slowRelease
		_, _ = io.WriteString(w, "second")
	})
	hl := listen(t)
	hg, err := httpguard.New(g, httpguard.Config{OnDecision: b.decided})
	must(t, err)
	hs := &http.Server{Handler: b.recordHTTP(hg.Handler(mux)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	b.httpAddr = hl.Addr().String()

	gg, err := grpcguard.New(g, grpcguard.Config{OnDecision: b.decided})
	must(t, err)
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(b.recordUnary, gg.Unary()), grpc.ChainStreamInterceptor(b.recordStream, gg.Stream()))
	b.svc.Register(gs)
	gs.RegisterService(&echoDesc, b)
	gl := listen(t)
	go func() { _ = gs.Serve(gl) }()
	b.grpcAddr = gl.Addr().String()

	t.Cleanup(func() {
		select {
		case <-b.slowRelease:
		default:
			close(b.slowRelease)
		}
		hs.Close()
		gs.Stop()
		cancel()
		w.Close()
	})
	return b
}

func (b *backend) record(s seen) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, s)
}

func (b *backend) seen() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.log...)
}

func (b *backend) refuse(err error) {
	b.refused.Add(1)
	if f := b.onRefuse.Load(); f != nil {
		(*f)(err)
	}
}

// The backends are guarded by the real adapters (cell/httpguard and
// cell/grpcguard); the recorders in front of them keep what the router sent.

func (b *backend) decided(d admission.Decision) {
	if d.Err != nil {
		b.refuse(d.Err)
	}
}

func (b *backend) recordHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(seen{proto: "http", key: r.Header.Get(wire.KeyMD), epochs: r.Header.Values(wire.EpochMD), headers: r.Header.Clone()})
		next.ServeHTTP(w, r)
	})
}

func (b *backend) recordMD(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	var key string
	if v := md.Get(wire.KeyMD); len(v) > 0 {
		key = v[0]
	}
	b.record(seen{proto: "grpc", key: key, epochs: md.Get(wire.EpochMD), md: md.Copy()})
}

func (b *backend) recordUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	b.recordMD(ctx)
	return h(ctx, req)
}

func (b *backend) recordStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	b.recordMD(ss.Context())
	return h(srv, ss)
}

// echoDesc is a bidi stream service: every message comes back prefixed with
// the cell's name.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "cellkit.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(_ context.Context, req any) (any, error) {
				return wrapperspb.String(srv.(*backend).cell + ":" + req.(*wrapperspb.StringValue).GetValue()), nil
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/cellkit.test.Echo/Get"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName: "Chat", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			b := srv.(*backend)
			for {
				m := new(wrapperspb.StringValue)
				if err := ss.RecvMsg(m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := ss.SendMsg(wrapperspb.String(b.cell + ":" + m.GetValue())); err != nil {
					return err
				}
			}
		},
	}},
}

// pausableSource passes a store's map changes on, except while paused: then
// it holds them back until Resume, so a gateway can be made stale.
type pausableSource struct {
	router.Source
	mu     sync.Mutex
	resume chan struct{}
}

func (p *pausableSource) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

func (p *pausableSource) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

func (p *pausableSource) Watch(ctx context.Context, rev int64) <-chan router.Event {
	in := p.Source.Watch(ctx, rev)
	out := make(chan router.Event)
	go func() {
		defer close(out)
		for ev := range in {
			p.mu.Lock()
			r := p.resume
			p.mu.Unlock()
			if r != nil {
				select {
				case <-r:
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
