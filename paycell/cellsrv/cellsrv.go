package cellsrv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/chaos/reqfault"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
)

// ErrBadConfig is wrapped by configuration errors.
var ErrBadConfig = errors.New("bad paycell cell configuration")

// Config configures one paycell instance. Zero values mean the defaults.
type Config struct {
	// Cluster selects the etcd key prefix /cellkit/<cluster>/. Default
	// "default".
	Cluster string
	// Cell is the cell this instance serves. Required.
	Cell string
	// Instance names the instance within its cell. Required; two live
	// instances must not share a name.
	Instance string
	// Etcd is a client of the cluster's etcd. Required; the caller closes
	// it after Close.
	Etcd *clientv3.Client

	// DSN opens the books (infra/sqldb: sqlite:PATH or
	// mysql://USER@HOST:PORT/DB) when DB is nil; the cell closes that
	// database on Close.
	DSN string
	// DB and Dialect are an open database instead of DSN; the caller owns
	// it and closes it after Close.
	DB      *sql.DB
	Dialect sqldb.Dialect

	// HTTP and GRPC are the listeners to serve the API on; at least one.
	// The cell closes them.
	HTTP, GRPC net.Listener
	// AdvertiseHTTP and AdvertiseGRPC are the host:port published in etcd
	// for routers. Default the listeners' addresses.
	AdvertiseHTTP, AdvertiseGRPC string

	// Bank receives top-ups and withdrawals (paycell/bank, in-process or
	// its HTTP Client). Nil: operations stay pending until a callback
	// arrives.
	Bank paycell.BankChannel
	// SettleEvery is the settler's period. Default 1s; negative: no
	// settler.
	SettleEvery time.Duration
	// ResubmitEvery is how often bank operations pending for longer than
	// ResubmitAfter are handed to the bank again (Submit is idempotent).
	// Defaults 5s and 10s; ResubmitEvery negative: never.
	ResubmitEvery, ResubmitAfter time.Duration
	// DrainTimeout bounds the graceful stop of the servers in Close.
	// Default 10s.
	DrainTimeout time.Duration

	// Guard tunes the etcd-registered guard instance (lease TTL, fence
	// margin, ...); Cluster, Cell, Instance, the addresses, Clock and
	// Logger are set from this Config. Zero durations: etcdcell defaults.
	Guard etcdcell.Config
	// Service tunes the service (StatementLimit, TxAttempts, IDs); Cell,
	// SlotCount, DB, Dialect, Bank, Clock and Logger are set from this
	// Config.
	Service paycell.Config

	// Chaos, if set, injects request faults (chaos/reqfault) in front of
	// the guard, on HTTP and gRPC. Nil: none. The caller closes it.
	Chaos *reqfault.Injector
	// OnAdmit and OnRelease, if set, receive the admission records of the
	// HTTP and gRPC guards and of the settler (see cell/admission.Log).
	OnAdmit, OnRelease func(admission.Record)
	// Clock is the time source. Default the real clock.
	Clock clock.Clock
	// Logger receives the cell's events. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Cluster == "" {
		c.Cluster = "default"
	}
	if c.SettleEvery == 0 {
		c.SettleEvery = time.Second
	}
	if c.ResubmitEvery == 0 {
		c.ResubmitEvery = 5 * time.Second
	}
	if c.ResubmitAfter == 0 {
		c.ResubmitAfter = 10 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the fields against each other (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	if c.Etcd == nil {
		return fmt.Errorf("cellsrv: no etcd client: %w", ErrBadConfig)
	}
	if (c.DB == nil) == (c.DSN == "") {
		return fmt.Errorf("cellsrv: give a DSN or an open DB (one of them): %w", ErrBadConfig)
	}
	if c.DB != nil && c.Dialect != sqldb.SQLite && c.Dialect != sqldb.MySQL {
		return fmt.Errorf("cellsrv: dialect %q of the DB: %w", c.Dialect, ErrBadConfig)
	}
	if c.DSN != "" {
		if _, err := sqldb.ParseDSN(c.DSN); err != nil {
			return fmt.Errorf("cellsrv: %v: %w", err, ErrBadConfig)
		}
	}
	if c.HTTP == nil && c.GRPC == nil {
		return fmt.Errorf("cellsrv: no listener (want HTTP, gRPC or both): %w", ErrBadConfig)
	}
	if c.DrainTimeout < 0 || c.ResubmitAfter < 0 {
		return fmt.Errorf("cellsrv: negative DrainTimeout or ResubmitAfter: %w", ErrBadConfig)
	}
	g := c.guardConfig()
	if err := g.Validate(); err != nil {
		return fmt.Errorf("cellsrv: %w", err)
	}
	return nil
}

func (c Config) guardConfig() etcdcell.Config {
	g := c.Guard
	g.Cluster, g.Cell, g.Instance = c.Cluster, c.Cell, c.Instance
	g.HTTPAddr, g.GRPCAddr = c.AdvertiseHTTP, c.AdvertiseGRPC
	if g.HTTPAddr == "" && c.HTTP != nil {
		g.HTTPAddr = c.HTTP.Addr().String()
	}
	if g.GRPCAddr == "" && c.GRPC != nil {
		g.GRPCAddr = c.GRPC.Addr().String()
	}
	if g.Clock == nil {
		g.Clock = c.Clock
	}
	if g.Logger == nil {
		g.Logger = c.Logger
	}
	return g
}

// Cell is a running paycell instance: its books, its guard instance
// registered in etcd, its guarded HTTP and gRPC servers, the settler and
// the bank resubmitter.
type Cell struct {
	cfg     Config
	log     *slog.Logger
	db      *sql.DB
	ownDB   bool
	inst    *etcdcell.Instance
	svc     *paycell.Service
	settler *paycell.Settler
	http    *http.Server
	grpc    *grpc.Server

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
	closeErr error
}

// NewCell opens and migrates the books, registers the guard instance in
// etcd (which reads the slot count from the map), and starts serving,
// settling and resubmitting. ctx bounds the start only. On error nothing
// is left running, and the listeners are closed.
func NewCell(ctx context.Context, cfg Config) (_ *Cell, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		closeListeners(cfg)
		return nil, err
	}
	c := &Cell{cfg: cfg, log: cfg.Logger.With("cell", cfg.Cell, "instance", cfg.Instance)}
	defer func() {
		if err != nil {
			c.abort()
		}
	}()
	if c.db = cfg.DB; c.db == nil {
		var d sqldb.Dialect
		if c.db, d, err = sqldb.Open(ctx, cfg.DSN); err != nil {
			return nil, fmt.Errorf("cellsrv: %w", err)
		}
		c.ownDB, c.cfg.Dialect = true, d
	}
	if err := schema.Migrate(ctx, c.db, c.cfg.Dialect); err != nil {
		return nil, fmt.Errorf("cellsrv: %w", err)
	}
	if c.inst, err = etcdcell.Register(ctx, cfg.Etcd, cfg.guardConfig()); err != nil {
		return nil, fmt.Errorf("cellsrv: %w", err)
	}
	guard := c.inst.Guard()
	sc := cfg.Service
	sc.Cell, sc.SlotCount, sc.DB, sc.Dialect, sc.Bank = cfg.Cell, guard.Table().SlotCount(), c.db, c.cfg.Dialect, cfg.Bank
	sc.Clock, sc.Logger = cfg.Clock, c.log
	if c.svc, err = paycell.New(sc); err != nil {
		return nil, fmt.Errorf("cellsrv: %w", err)
	}
	if cfg.SettleEvery > 0 {
		if c.settler, err = paycell.NewSettler(c.svc, paycell.SettlerConfig{
			Guard: guard, Instance: cfg.Instance, Every: cfg.SettleEvery,
			OnAdmit: cfg.OnAdmit, OnRelease: cfg.OnRelease, Clock: cfg.Clock, Logger: c.log,
		}); err != nil {
			return nil, fmt.Errorf("cellsrv: %w", err)
		}
	}

	if cfg.HTTP != nil {
		mw, err := httpguard.New(guard, paycell.HTTPGuardConfig(cfg.OnAdmit, cfg.OnRelease))
		if err != nil {
			return nil, fmt.Errorf("cellsrv: %w", err)
		}
		c.http = &http.Server{Handler: c.health(cfg.Chaos.HTTP(mw.Handler(c.svc.HTTPHandler()))), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelWarn)}
	}
	if cfg.GRPC != nil {
		icpt, err := grpcguard.New(guard, paycell.GRPCGuardConfig(cfg.OnAdmit, cfg.OnRelease))
		if err != nil {
			return nil, fmt.Errorf("cellsrv: %w", err)
		}
		opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(cfg.Chaos.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(cfg.Chaos.StreamServerInterceptor())}
		c.grpc = grpc.NewServer(append(opts, icpt.ServerOptions()...)...)
		c.svc.RegisterGRPC(c.grpc)
	}

	// From here on nothing fails: start the loops and the servers.
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if c.settler != nil {
		c.run(func() { _ = c.settler.Run(bg) })
	}
	if cfg.Bank != nil && cfg.ResubmitEvery > 0 {
		c.run(func() { c.resubmit(bg) })
	}
	if c.http != nil {
		c.run(func() {
			if err := c.http.Serve(cfg.HTTP); err != nil && !errors.Is(err, http.ErrServerClosed) {
				c.log.Error("HTTP server stopped", "err", err)
			}
		})
	}
	if c.grpc != nil {
		c.run(func() {
			if err := c.grpc.Serve(cfg.GRPC); err != nil {
				c.log.Error("gRPC server stopped", "err", err)
			}
		})
	}
	c.log.Info("paycell serving", "http", c.HTTPAddr(), "grpc", c.GRPCAddr(), "dialect", c.cfg.Dialect,
		"slots", c.svc.SlotCount(), "epoch", guard.Table().Epoch(), "settle_every", cfg.SettleEvery)
	return c, nil
}

func (c *Cell) run(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// health answers GET /healthz itself: 200 while the guard instance admits
// requests (registered, lease current), 503 otherwise.
func (c *Cell) health(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if !c.inst.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"status":"fenced","cell":%q}`+"\n", c.cfg.Cell)
			return
		}
		fmt.Fprintf(w, `{"status":"ok","cell":%q}`+"\n", c.cfg.Cell)
	})
}

func (c *Cell) resubmit(ctx context.Context) {
	for {
		t := c.cfg.Clock.NewTimer(c.cfg.ResubmitEvery)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return
		}
		n, err := c.svc.ResubmitPending(ctx, c.cfg.ResubmitAfter, 1000)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("resubmitting pending bank operations", "err", err, "resubmitted", n)
		case n > 0:
			c.log.Info("resubmitted pending bank operations", "count", n)
		}
	}
}

// Service is the cell's payment service (its books: Service().DB()).
func (c *Cell) Service() *paycell.Service { return c.svc }

// Instance is the cell's guard instance in etcd.
func (c *Cell) Instance() *etcdcell.Instance { return c.inst }

// Settler is the cell's settler (nil when turned off).
func (c *Cell) Settler() *paycell.Settler { return c.settler }

// HTTPAddr is the address the HTTP API listens on ("" if none).
func (c *Cell) HTTPAddr() string { return addrOf(c.cfg.HTTP) }

// GRPCAddr is the address the gRPC API listens on ("" if none).
func (c *Cell) GRPCAddr() string { return addrOf(c.cfg.GRPC) }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Close stops the cell gracefully: the settler and resubmitter stop, the
// servers stop taking requests and finish the running ones (up to
// DrainTimeout), the guard instance closes (its writes drained, its lease
// revoked so routers and barriers stop counting it), then the database
// closes if the cell opened it. Safe to call more than once.
func (c *Cell) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return c.closeErr
	}
	c.closed = true
	c.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	grpcDone := make(chan struct{})
	if c.grpc != nil {
		go func() { c.grpc.GracefulStop(); close(grpcDone) }()
	}
	if c.http != nil {
		if err := c.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cellsrv: HTTP drain: %w", err))
			c.http.Close()
		}
	}
	if c.grpc != nil {
		select {
		case <-grpcDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("cellsrv: gRPC drain: %w", ctx.Err()))
			c.grpc.Stop()
			<-grpcDone
		}
	}
	c.wg.Wait()
	if err := c.inst.Close(); err != nil {
		errs = append(errs, err)
	}
	if c.ownDB {
		if err := c.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cellsrv: close database: %w", err))
		}
	}
	c.closeErr = errors.Join(errs...)
	c.log.Info("paycell stopped", "err", c.closeErr)
	return c.closeErr
}

// Crash stops the cell the way kill -9 stops its process, for fault
// drills: the guard instance crashes (its fence trips, cancelling every
// request still running, and its lease is left to expire, not revoked),
// the servers close every connection at once, the loops stop. Nothing is
// drained and nothing more is written. Close after Crash does nothing.
func (c *Cell) Crash() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.inst.Crash()
	c.cancel()
	if c.http != nil {
		_ = c.http.Close()
	}
	if c.grpc != nil {
		c.grpc.Stop()
	}
	c.wg.Wait()
	if c.ownDB {
		_ = c.db.Close()
	}
	c.log.Warn("paycell crashed")
}

// abort undoes a NewCell that failed half way.
func (c *Cell) abort() {
	if c.inst != nil {
		_ = c.inst.Close()
	}
	if c.ownDB && c.db != nil {
		_ = c.db.Close()
	}
	closeListeners(c.cfg)
}

func closeListeners(cfg Config) {
	for _, l := range []io.Closer{cfg.HTTP, cfg.GRPC} {
		if l != nil {
			_ = l.Close()
		}
	}
}
