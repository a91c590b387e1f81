package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr, os.LookupEnv))
}

// run is cellrouter until ctx ends (a signal), then a drain; it returns the
// exit code.
func run(ctx context.Context, args []string, stderr io.Writer, env func(string) (string, bool)) int {
	cfg, err := loadConfig(args, env)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "cellrouter: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Run cellrouter -h for usage.")
		}
		return exitUsage
	}
	log := newLogger(cfg.Log, stderr)
	if err := serve(ctx, cfg, log, env); err != nil {
		log.Error("cellrouter stopped", "err", err)
		return exitRuntime
	}
	return exitOK
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, env func(string) (string, bool)) error {
	password, _ := env(envPassword)
	cli, err := etcdstore.Dial(ctx, etcdstore.DialConfig{
		Endpoints: cfg.Etcd.Endpoints, DialTimeout: cfg.Etcd.DialTimeout.D(),
		CACert: cfg.Etcd.CACert, Cert: cfg.Etcd.Cert, Key: cfg.Etcd.Key,
		Username: cfg.Etcd.Username, Password: password,
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	store, err := etcdstore.New(cli, etcdstore.Config{Cluster: cfg.Cluster, Actor: "cellrouter"})
	if err != nil {
		return err
	}

	var disc router.Discovery
	var onUpdate func(old, new *router.Table)
	var fromMap *router.StaticDiscovery
	switch cfg.Discovery.Mode {
	case DiscoveryEtcd:
		d, err := etcdcell.NewDiscovery(ctx, cli, cfg.Cluster, log)
		if err != nil {
			return err
		}
		defer d.Close()
		disc = d
	case DiscoveryStatic:
		sd := &router.StaticDiscovery{}
		sd.Set(cfg.Discovery.Static)
		disc = sd
	case DiscoveryMap:
		fromMap = &router.StaticDiscovery{}
		disc = fromMap
		onUpdate = func(_, t *router.Table) { fromMap.Set(mapInstances(t)) }
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mapKey := store.Keys().Map()
	gw, err := gateway.New(cfg.Config, gateway.Options{
		Source: store, Discovery: disc, Registry: reg, Logger: log, OnUpdate: onUpdate, Profiling: cfg.Listen.Pprof,
		RevisionProbe: func(ctx context.Context) (int64, error) {
			resp, err := cli.Get(ctx, mapKey, clientv3.WithKeysOnly())
			if err != nil || len(resp.Kvs) == 0 {
				return 0, errors.Join(err, errors.New("no map"))
			}
			return resp.Kvs[0].ModRevision, nil
		},
	})
	if err != nil {
		return err
	}
	if err := gw.Start(ctx); err != nil {
		if errors.Is(err, etcdstore.ErrNoMap) {
			return fmt.Errorf("cluster %q has no map yet; create one with `cellctl map init`: %w", cfg.Cluster, err)
		}
		return err
	}
	defer gw.Close()
	if fromMap != nil {
		fromMap.Set(mapInstances(gw.Watcher().Table()))
	}

	var ls gateway.Listeners
	for _, l := range []struct {
		addr string
		dst  *net.Listener
	}{{cfg.Listen.HTTP, &ls.HTTP}, {cfg.Listen.GRPC, &ls.GRPC}, {cfg.Listen.Admin, &ls.Admin}} {
		if l.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll(ls)
			return err
		}
		*l.dst = lis
	}
	log.Info("cellrouter serving", "http", addrOf(ls.HTTP), "grpc", addrOf(ls.GRPC), "admin", addrOf(ls.Admin),
		"cluster", cfg.Cluster, "discovery", cfg.Discovery.Mode, "epoch", gw.Watcher().Table().Epoch())
	return gw.Serve(ctx, ls)
}

// mapInstances turns the map's cell endpoints into instances: "http://h:p"
// is an HTTP address, "grpc://h:p" a gRPC one, a bare "h:p" both.
func mapInstances(t *router.Table) []router.Instance {
	var out []router.Instance
	for _, c := range t.Cells() {
		for i, ep := range c.Endpoints {
			in := router.Instance{Cell: c.ID, ID: fmt.Sprintf("%s-%d", c.ID, i)}
			switch {
			case strings.HasPrefix(ep, "http://"):
				in.HTTPAddr = strings.TrimPrefix(ep, "http://")
			case strings.HasPrefix(ep, "grpc://"):
				in.GRPCAddr = strings.TrimPrefix(ep, "grpc://")
			default:
				in.HTTPAddr, in.GRPCAddr = ep, ep
			}
			out = append(out, in)
		}
	}
	return out
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

func closeAll(ls gateway.Listeners) {
	for _, l := range []net.Listener{ls.HTTP, ls.GRPC, ls.Admin} {
		if l != nil {
			l.Close()
		}
	}
}
