package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/router"
)

// Options are what a Gateway is wired to.
type Options struct {
	// Source is where the shard map comes from (infra/etcdstore.Store).
	// Required. The gateway runs its own router.Watcher over it.
	Source router.Source
	// Discovery tells where each cell's instances listen. Required.
	Discovery router.Discovery
	// Registry receives the gateway's metrics and is served on the admin
	// handler's /metrics. Default: a new registry.
	Registry *prometheus.Registry
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// RevisionProbe, if set, returns the store's current mod revision of
	// the map key; the gateway polls it every ProbeInterval to publish
	// how far its watcher lags behind (cellrouter_map_revision_lag).
	RevisionProbe func(ctx context.Context) (int64, error)
	// ProbeInterval is how often RevisionProbe is called. Default 5s.
	ProbeInterval time.Duration
	// OnUpdate, if set, is called after each new map is installed, after
	// the gateway's own bookkeeping (see router.WatcherConfig.OnUpdate).
	OnUpdate func(old, new *router.Table)
	// Middleware, if set, wraps the HTTP proxy handler in Serve (request
	// fault injection in drills: chaos/reqfault). With it the standard
	// net/http server serves, not the lean HTTP/1 one.
	Middleware func(http.Handler) http.Handler
	// GRPCInterceptor, if set, runs before every call the gRPC proxy
	// forwards (every call is a stream to the proxy: its info.FullMethod
	// is the call's method, the messages are raw frames). Request fault
	// injection in drills: chaos/reqfault's StreamServerInterceptor.
	GRPCInterceptor grpc.StreamServerInterceptor
	// Profiling adds Go's profiler (net/http/pprof, /debug/pprof/) to the
	// admin handler.
	Profiling bool
}

// Gateway routes HTTP requests and gRPC calls by key to the cell that owns
// the key. Create it with New, Start it, then either Serve listeners or
// mount HTTPHandler, GRPCServer and AdminHandler yourself.
type Gateway struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	watcher *router.Watcher
	pools   *pools
	holds   *holds
	routes  []*httpRoute
	gkeys   grpcKeys

	transport *http.Transport
	h1        *h1Pool
	proxy     http.Handler
	grpcSrv   *grpc.Server

	epochStr   atomic.Pointer[epochString]
	lastUpdate atomic.Int64 // unix nanoseconds
	started    atomic.Bool
	draining   atomic.Bool
	serveHTTP  atomic.Bool // Serve serves HTTP: readiness wants HTTP instances
	serveGRPC  atomic.Bool // and gRPC ones

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type epochString struct {
	epoch uint64
	s     string
}

// New validates cfg (after applying defaults) and builds a gateway.
func New(cfg Config, opts Options) (*Gateway, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Source == nil {
		return nil, fmt.Errorf("gateway: no map source: %w", ErrBadConfig)
	}
	if opts.Discovery == nil {
		return nil, fmt.Errorf("gateway: no discovery: %w", ErrBadConfig)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 5 * time.Second
	}
	g := &Gateway{cfg: cfg, opts: opts, log: opts.Logger, reg: opts.Registry}
	m, err := newMetrics(opts.Registry, g.sinceUpdate)
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	g.m = m
	if g.routes, err = compileRoutes(cfg.HTTP.Routes); err != nil {
		return nil, err
	}
	ms, err := compileMethods(cfg.GRPC.Methods)
	if err != nil {
		return nil, err
	}
	g.gkeys = grpcKeys{def: cfg.GRPC.Metadata, methods: ms}
	g.holds = newHolds(cfg.Buffer.MaxPerSlot, cfg.Buffer.MaxTotal)
	g.pools = newPools(cfg.DialTimeout.D(), cfg.GRPC.MaxMessageBytes)
	g.watcher = router.NewWatcher(opts.Source, router.WatcherConfig{
		OnUpdate: g.onUpdate,
		OnError: func(err error) {
			g.log.Error("map refused; routing with the last good one", "err", err)
		},
	})
	g.initHTTP()
	g.initGRPC()
	return g, nil
}

func (g *Gateway) onUpdate(old, t *router.Table) {
	g.installed(t)
	g.log.Info("map updated", "from", old.Epoch(), "to", t.Epoch(), "revision", g.watcher.Revision())
	if g.opts.OnUpdate != nil {
		g.opts.OnUpdate(old, t)
	}
}

func (g *Gateway) installed(t *router.Table) {
	g.epochStr.Store(&epochString{t.Epoch(), strconv.FormatUint(t.Epoch(), 10)})
	g.m.epoch.Set(float64(t.Epoch()))
	g.lastUpdate.Store(time.Now().UnixNano())
}

func (g *Gateway) sinceUpdate() float64 {
	n := g.lastUpdate.Load()
	if n == 0 {
		return 0
	}
	return time.Since(time.Unix(0, n)).Seconds()
}

// epochText is the decimal form of epoch, cached for the current one.
func (g *Gateway) epochText(epoch uint64) string {
	if e := g.epochStr.Load(); e != nil && e.epoch == epoch {
		return e.s
	}
	return strconv.FormatUint(epoch, 10)
}

// Start loads the map (it fails if there is none) and starts following the
// map and discovery until ctx ends or Close is called.
func (g *Gateway) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: started twice")
	}
	ctx, g.cancel = context.WithCancel(ctx)
	if err := g.watcher.Start(ctx); err != nil {
		g.cancel()
		return fmt.Errorf("gateway: %w", err)
	}
	g.installed(g.watcher.Table())
	g.log.Info("map loaded", "epoch", g.watcher.Table().Epoch(), "revision", g.watcher.Revision())
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.pools.follow(ctx, g.opts.Discovery)
	}()
	if g.opts.RevisionProbe != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.probe(ctx)
		}()
	}
	return nil
}

func (g *Gateway) probe(ctx context.Context) {
	t := time.NewTicker(g.opts.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, g.opts.ProbeInterval)
		rev, err := g.opts.RevisionProbe(pctx)
		cancel()
		if err == nil {
			g.m.revisionLag.Set(float64(max(0, rev-g.watcher.Revision())))
		} else if ctx.Err() == nil {
			g.log.Warn("map revision probe failed", "err", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Watcher returns the gateway's map watcher.
func (g *Gateway) Watcher() *router.Watcher { return g.watcher }

// Close stops following the map and discovery and closes upstream
// connections. Call it after the servers have stopped.
func (g *Gateway) Close() {
	g.once.Do(func() {
		if g.cancel != nil {
			g.cancel()
		}
		g.wg.Wait()
		g.watcher.Close()
		g.pools.close()
		g.transport.CloseIdleConnections()
		g.h1.close()
	})
}

// Ready reports whether the gateway can route: it has a map, is not
// draining, and every cell that owns slots or whitelisted keys has at least
// one instance (with an HTTP address if Serve serves HTTP, and with a gRPC
// address if it serves gRPC).
func (g *Gateway) Ready() error {
	if g.draining.Load() {
		return errors.New("draining")
	}
	t := g.watcher.Table()
	if t == nil {
		return errors.New("no map loaded")
	}
	owning := map[string]bool{}
	for _, r := range t.OwnerRanges() {
		if r.Cell != "" {
			owning[r.Cell] = true
		}
	}
	for _, w := range t.Whitelist() {
		owning[w.Cell] = true
	}
	var missing []error
	for _, c := range t.Cells() {
		if !owning[c.ID] {
			continue
		}
		nh, ng := g.pools.instancesOf(c.ID)
		needH, needG := g.serveHTTP.Load(), g.serveGRPC.Load()
		if (needH && nh == 0) || (needG && ng == 0) || (!needH && !needG && nh+ng == 0) {
			missing = append(missing, fmt.Errorf("cell %s owns keys but has %d HTTP and %d gRPC instances", c.ID, nh, ng))
		}
	}
	return errors.Join(missing...)
}

// AdminHandler serves /healthz (the process is up), /readyz (Ready) and
// /metrics (the registry).
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := g.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	if g.opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Listeners are what Serve serves; a nil listener is not served.
type Listeners struct {
	HTTP, GRPC, Admin net.Listener
}

// Serve serves the listeners until ctx ends, then drains: /readyz turns
// 503, the HTTP and gRPC listeners stop accepting, requests in flight
// (held ones included) finish, bounded by DrainTimeout, after which the
// rest are cut; the admin listener closes last. Serve closes the
// listeners. It returns nil after a drain, or the first serving error.
func (g *Gateway) Serve(ctx context.Context, ls Listeners) error {
	if !g.started.Load() {
		return errors.New("gateway: Serve before Start")
	}
	g.serveHTTP.Store(ls.HTTP != nil)
	g.serveGRPC.Store(ls.GRPC != nil)
	var httpSrv, adminSrv *http.Server
	errc := make(chan error, 3)
	running := 0
	var lean *h1Server
	if ls.HTTP != nil {
		var h http.Handler = g
		if g.opts.Middleware != nil {
			h = g.opts.Middleware(g)
		}
		httpSrv = &http.Server{Handler: h, ReadHeaderTimeout: g.cfg.HTTP.ReadHeaderTimeout.D(), IdleTimeout: g.cfg.HTTP.IdleTimeout.D(),
			ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
		running++
		if g.cfg.HTTP.StdServer || g.opts.Middleware != nil {
			go func() { errc <- serveErr(httpSrv.Serve(ls.HTTP)) }()
		} else {
			lean = newH1Server(g, httpSrv, ls.HTTP.Addr())
			go func() { errc <- lean.Serve(ls.HTTP) }()
		}
	}
	if ls.GRPC != nil {
		running++
		go func() { errc <- g.grpcSrv.Serve(ls.GRPC) }()
	}
	if ls.Admin != nil {
		adminSrv = &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		running++
		go func() { errc <- serveErr(adminSrv.Serve(ls.Admin)) }()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		running--
	}
	g.draining.Store(true)
	g.log.Info("draining", "timeout", g.cfg.DrainTimeout.D(), "held", g.holdsTotal())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.DrainTimeout.D())
	defer cancel()
	var wg sync.WaitGroup
	if lean != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lean.Shutdown(dctx); err != nil {
				g.log.Warn("HTTP drain cut short", "err", err)
			}
		}()
	} else if httpSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := httpSrv.Shutdown(dctx); err != nil {
				g.log.Warn("HTTP drain cut short", "err", err)
				httpSrv.Close()
			}
		}()
	}
	if ls.GRPC != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { g.grpcSrv.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-dctx.Done():
				g.log.Warn("gRPC drain cut short", "err", dctx.Err())
				g.grpcSrv.Stop()
				<-done
			}
		}()
	}
	wg.Wait()
	if adminSrv != nil {
		adminSrv.Close()
	}
	for ; running > 0; running-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	g.log.Info("drained")
	return first
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (g *Gateway) holdsTotal() int {
	g.holds.mu.Lock()
	defer g.holds.mu.Unlock()
	return g.holds.total
}

// routeError is the router's own answer when it cannot pick an instance.
type routeError struct {
	outcome string
	cell    string
	msg     string
}

func (e *routeError) Error() string { return e.msg }

// resolve returns where key goes now: its route (after holding it while it
// is frozen) and the owner cell's ID. hint, when set, overrides the map's
// owner: the owner a refusing guard named at an epoch the router has not
// reached.
func (g *Gateway) resolve(ctx context.Context, proto, key string, hint *ownerHint) (router.Route, string, error) {
	if hint != nil {
		return router.Route{Epoch: hint.epoch}, hint.owner, nil
	}
	r := g.watcher.Table().Lookup(key)
	if r.Frozen {
		var err error
		if r, err = g.hold(ctx, proto, key, r); err != nil {
			return r, "", err
		}
	}
	if r.Cell == nil {
		return r, "", &routeError{outcome: outcomeNoOwner, msg: fmt.Sprintf("cellrouter: no cell owns slot %d at epoch %d", r.Slot, r.Epoch)}
	}
	return r, r.Cell.ID, nil
}

type ownerHint struct {
	owner string
	epoch uint64
}

// afterRefusal decides what follows a guard refusal on the first attempt:
// wait for the router's map to reach the guard's epoch and route again, or,
// when the map does not get there in time, trust the owner the guard named.
func (g *Gateway) afterRefusal(ctx context.Context, proto string, ref error) *ownerHint {
	epoch, owner := refusalEpoch(ref)
	g.m.redirects.WithLabelValues(proto, string(cell.CodeOf(ref))).Inc()
	if g.catchUp(ctx, epoch) {
		return nil
	}
	if owner != "" {
		g.log.Warn("map behind a guard; retrying on the owner it named", "proto", proto, "have", g.watcher.Table().Epoch(), "guard", epoch, "owner", owner)
		return &ownerHint{owner: owner, epoch: epoch}
	}
	return nil
}
