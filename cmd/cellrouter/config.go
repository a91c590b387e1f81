package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// Environment variables, shared with cellctl.
const (
	envEtcd     = "CELLKIT_ETCD"
	envCluster  = "CELLKIT_CLUSTER"
	envPassword = "CELLKIT_ETCD_PASSWORD"
)

// Config is cellrouter's YAML file. Flags override it; zero fields mean the
// defaults. The gateway's own settings (http, grpc, buffer, redirectWait,
// dialTimeout, drainTimeout) sit at the top level beside these.
type Config struct {
	// Listen says where to serve.
	Listen ListenConfig `json:"listen"`
	// Etcd says how to reach the etcd that holds the map.
	Etcd EtcdConfig `json:"etcd"`
	// Cluster selects /cellkit/<cluster>/ in etcd. Default "default" (env CELLKIT_CLUSTER).
	Cluster string `json:"cluster,omitempty"`
	// Discovery says where cell instances are found.
	Discovery DiscoveryConfig `json:"discovery"`
	// Log configures the structured log on stderr.
	Log LogConfig `json:"log"`

	gateway.Config
}

// ListenConfig are host:port addresses; "" turns a listener off.
type ListenConfig struct {
	// HTTP is the HTTP proxy. Default ":8080".
	HTTP string `json:"http,omitempty"`
	// GRPC is the gRPC proxy. Default ":8081".
	GRPC string `json:"grpc,omitempty"`
	// Admin serves /healthz, /readyz and /metrics. Default ":9090".
	Admin string `json:"admin,omitempty"`
	// Pprof adds Go's profiler (/debug/pprof/) to the admin listener.
	// Off by default: profiles show request paths and cost CPU while taken.
	Pprof bool `json:"pprof,omitempty"`
}

// EtcdConfig says how to reach etcd; the password comes from the
// environment (CELLKIT_ETCD_PASSWORD), never from the file.
type EtcdConfig struct {
	// Endpoints are client URLs. Default http://127.0.0.1:2379 (env CELLKIT_ETCD, comma-separated).
	Endpoints []string `json:"endpoints,omitempty"`
	// DialTimeout bounds the first contact. Default 5s.
	DialTimeout gateway.Duration `json:"dialTimeout,omitempty"`
	// CACert, Cert and Key are PEM files for TLS.
	CACert string `json:"cacert,omitempty"`
	Cert   string `json:"cert,omitempty"`
	Key    string `json:"key,omitempty"`
	// Username authenticates with etcd's auth.
	Username string `json:"username,omitempty"`
}

// Discovery modes.
const (
	DiscoveryEtcd   = "etcd"   // instances registered under endpoints/ in etcd (infra/etcdcell)
	DiscoveryStatic = "static" // the list in discovery.static
	DiscoveryMap    = "map"    // the endpoints the map gives each cell
)

// DiscoveryConfig says where cell instances are found.
type DiscoveryConfig struct {
	// Mode is etcd (default), static or map. In map mode a cell endpoint
	// "http://h:p" is an HTTP address, "grpc://h:p" a gRPC one, and a bare
	// "h:p" serves both.
	Mode string `json:"mode,omitempty"`
	// Static lists the instances in static mode.
	Static []router.Instance `json:"static,omitempty"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `json:"level,omitempty"`
	// Format is json (default) or text.
	Format string `json:"format,omitempty"`
}

func (c *Config) setDefaults(env func(string) (string, bool)) {
	if len(c.Etcd.Endpoints) == 0 {
		if v, ok := env(envEtcd); ok && v != "" {
			c.Etcd.Endpoints = splitList(v)
		} else {
			c.Etcd.Endpoints = []string{"http://127.0.0.1:2379"}
		}
	}
	if c.Etcd.DialTimeout == 0 {
		c.Etcd.DialTimeout = gateway.Duration(5 * time.Second)
	}
	if c.Cluster == "" {
		if v, ok := env(envCluster); ok && v != "" {
			c.Cluster = v
		} else {
			c.Cluster = etcdstore.DefaultCluster
		}
	}
	if c.Discovery.Mode == "" {
		c.Discovery.Mode = DiscoveryEtcd
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Config.SetDefaults()
}

// Validate reports every problem, each naming its field or flag.
func (c Config) Validate() error {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	addrs := map[string]string{}
	for _, l := range []struct{ name, addr string }{{"listen.http (--listen-http)", c.Listen.HTTP}, {"listen.grpc (--listen-grpc)", c.Listen.GRPC}, {"listen.admin (--admin)", c.Listen.Admin}} {
		if l.addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			add("%s %q: want host:port, e.g. :8080 or 127.0.0.1:8080", l.name, l.addr)
			continue
		}
		if other, dup := addrs[l.addr]; dup && port != "0" {
			add("%s %q: already used by %s", l.name, l.addr, other)
		}
		addrs[l.addr] = l.name
		_ = host
	}
	if c.Listen.HTTP == "" && c.Listen.GRPC == "" {
		add("listen: neither listen.http nor listen.grpc is set; nothing to proxy")
	}
	dial := etcdstore.DialConfig{Endpoints: c.Etcd.Endpoints, DialTimeout: c.Etcd.DialTimeout.D(), CACert: c.Etcd.CACert, Cert: c.Etcd.Cert, Key: c.Etcd.Key, Username: c.Etcd.Username}
	if err := dial.Validate(); err != nil {
		add("etcd (--etcd): %s", strings.TrimPrefix(strings.TrimSuffix(err.Error(), ": "+etcdstore.ErrBadConfig.Error()), "etcdstore: "))
	}
	if err := etcdstore.CheckCluster(c.Cluster); err != nil {
		add("cluster (--cluster) %q: want 1-63 of a-z 0-9 -, starting and ending alphanumeric", c.Cluster)
	}
	switch c.Discovery.Mode {
	case DiscoveryEtcd, DiscoveryMap:
		if len(c.Discovery.Static) > 0 {
			add("discovery.static is set but discovery.mode is %q (want static)", c.Discovery.Mode)
		}
	case DiscoveryStatic:
		if len(c.Discovery.Static) == 0 {
			add("discovery.static: mode static needs at least one instance")
		}
		for i, in := range c.Discovery.Static {
			if in.Cell == "" || in.ID == "" {
				add("discovery.static[%d]: want cell and id", i)
			}
			if in.HTTPAddr == "" && in.GRPCAddr == "" {
				add("discovery.static[%d]: want an http or grpc address", i)
			}
			for _, a := range []string{in.HTTPAddr, in.GRPCAddr} {
				if _, _, err := net.SplitHostPort(a); a != "" && err != nil {
					add("discovery.static[%d]: address %q: want host:port", i, a)
				}
			}
		}
	default:
		add("discovery.mode (--discovery) %q: want etcd, static or map", c.Discovery.Mode)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level (--log-level) %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add("log.format (--log-format) %q: want json or text", c.Log.Format)
	}
	if err := c.Config.Validate(); err != nil {
		add("%s", strings.TrimPrefix(err.Error(), gateway.ErrBadConfig.Error()+": "))
	}
	if len(probs) == 0 {
		return nil
	}
	return &configError{probs}
}

// configError lists configuration problems; it is a usage error (exit 2).
type configError struct{ probs []string }

func (e *configError) Error() string {
	if len(e.probs) == 1 {
		return "config: " + e.probs[0]
	}
	return "config:\n  - " + strings.Join(e.probs, "\n  - ")
}

// usageError is a problem with the command line or the config file.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// loadConfig builds the configuration: defaults, then the file named by
// --config, then the flags that were set, then the environment for what is
// still unset.
func loadConfig(args []string, env func(string) (string, bool)) (Config, error) {
	fs := flag.NewFlagSet("cellrouter", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder)) // errors are returned, usage printed by the caller
	var (
		path      = fs.String("config", "", "YAML config file")
		http      = fs.String("listen-http", ":8080", "HTTP proxy address (\"\" turns it off)")
		grpc      = fs.String("listen-grpc", ":8081", "gRPC proxy address (\"\" turns it off)")
		admin     = fs.String("admin", ":9090", "admin address: /healthz, /readyz, /metrics (\"\" turns it off)")
		etcd      = fs.String("etcd", "", "etcd endpoints, comma-separated (env "+envEtcd+"; default http://127.0.0.1:2379)")
		cluster   = fs.String("cluster", "", "cluster name (env "+envCluster+"; default \"default\")")
		disc      = fs.String("discovery", "", "where instances are found: etcd, static or map (default etcd)")
		logLevel  = fs.String("log-level", "", "debug, info, warn or error (default info)")
		logFormat = fs.String("log-format", "", "json or text (default json)")
		pprof     = fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ on the admin address")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return Config{}, &usageError{fmt.Sprintf("unexpected arguments %q (cellrouter takes only flags)", fs.Args())}
	}
	c := Config{Listen: ListenConfig{HTTP: ":8080", GRPC: ":8081", Admin: ":9090"}}
	if *path != "" {
		data, err := os.ReadFile(*path)
		if err != nil {
			return Config{}, &usageError{fmt.Sprintf("config: %v", err)}
		}
		if err := yaml.UnmarshalStrict(data, &c); err != nil {
			return Config{}, &usageError{fmt.Sprintf("config %s: %v", *path, err)}
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["listen-http"] {
		c.Listen.HTTP = *http
	}
	if set["listen-grpc"] {
		c.Listen.GRPC = *grpc
	}
	if set["admin"] {
		c.Listen.Admin = *admin
	}
	if set["etcd"] {
		c.Etcd.Endpoints = splitList(*etcd)
	}
	if set["cluster"] {
		c.Cluster = *cluster
	}
	if set["discovery"] {
		c.Discovery.Mode = *disc
	}
	if set["log-level"] {
		c.Log.Level = *logLevel
	}
	if set["log-format"] {
		c.Log.Format = *logFormat
	}
	if set["pprof"] {
		c.Listen.Pprof = *pprof
	}
	c.setDefaults(env)
	return c, c.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// usage is printed for -h and usage errors.
const usage = `Usage: cellrouter [flags]

cellrouter is cellkit's gateway: an HTTP reverse proxy and a transparent gRPC
proxy that send each request to the cell owning its key in the shard map
kept in etcd. Requests for frozen keys are held until the cutover flips them.

Flags (override the --config file):
  --config FILE        YAML config file
  --listen-http ADDR   HTTP proxy address (default :8080; "" turns it off)
  --listen-grpc ADDR   gRPC proxy address (default :8081; "" turns it off)
  --admin ADDR         /healthz, /readyz and /metrics (default :9090)
  --etcd URLS          etcd endpoints, comma-separated (env CELLKIT_ETCD)
  --cluster NAME       cluster name (env CELLKIT_CLUSTER; default "default")
  --discovery MODE     etcd (default), static or map
  --log-level LEVEL    debug, info, warn or error (default info)
  --log-format FORMAT  json or text (default json)

SIGTERM or SIGINT drains: readiness turns 503, the listeners close, requests
in flight finish (bounded by drainTimeout), then cellrouter exits 0.
Exit codes: 0 drained, 1 runtime error, 2 usage or configuration error.
`
