package main

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// Environment variables, shared with cellctl and cellrouter.
const (
	envEtcd     = "CELLKIT_ETCD"
	envCluster  = "CELLKIT_CLUSTER"
	envPassword = "CELLKIT_ETCD_PASSWORD"
)

// usageError is a problem with the command line (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// logFlags are shared by both commands.
type logFlags struct{ level, format string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "json", "log format: json or text")
}

func (l logFlags) check() error {
	switch l.level {
	case "debug", "info", "warn", "error":
	default:
		return usagef("--log-level %q: want debug, info, warn or error", l.level)
	}
	if l.format != "json" && l.format != "text" {
		return usagef("--log-format %q: want json or text", l.format)
	}
	return nil
}

// bankFlags configure a virtual bank (in a cell's process or on its own).
type bankFlags struct {
	delay       time.Duration
	failureRate float64
	seed        uint64
}

func (b *bankFlags) register(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&b.delay, prefix+"delay", 50*time.Millisecond, "how long the virtual bank takes to decide an operation")
	fs.Float64Var(&b.failureRate, prefix+"failure-rate", 0, "share of operations the virtual bank fails, 0 to 1")
	fs.Uint64Var(&b.seed, prefix+"seed", 1, "seed of the virtual bank's decisions (deterministic per operation ID)")
}

func (b bankFlags) check(prefix string) error {
	if b.failureRate < 0 || b.failureRate > 1 {
		return usagef("--%sfailure-rate %v: want 0 to 1", prefix, b.failureRate)
	}
	if b.delay < 0 {
		return usagef("--%sdelay %v: want 0 or more", prefix, b.delay)
	}
	return nil
}

// cellConfig is the cell command's configuration.
type cellConfig struct {
	cluster, cell, instance string
	etcd                    etcdstore.DialConfig
	db                      string
	http, grpc              string
	advertiseHTTP           string
	advertiseGRPC           string
	bankURL                 string // callback base URL of an in-process bank
	bankSubmitURL           string // a `paycell bank` server to submit to
	bank                    bankFlags
	settleEvery             time.Duration
	drainTimeout            time.Duration
	leaseTTL                time.Duration
	log                     logFlags
}

func parseCell(args []string, env func(string) (string, bool)) (cellConfig, error) {
	var c cellConfig
	fs := flag.NewFlagSet("paycell", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder)) // errors are returned; usage is printed by the caller
	var etcdList string
	fs.StringVar(&c.cluster, "cluster", "", "cluster: the etcd prefix /cellkit/<cluster>/ (default \"default\", env "+envCluster+")")
	fs.StringVar(&c.cell, "cell", "", "the cell this instance serves (required)")
	fs.StringVar(&c.instance, "instance", "", "this instance's name, unique within the cell (default <cell>-<host name>)")
	fs.StringVar(&etcdList, "etcd", "", "etcd endpoints, comma-separated (default http://127.0.0.1:2379, env "+envEtcd+")")
	fs.StringVar(&c.etcd.CACert, "etcd-cacert", "", "PEM file of the CA that signs etcd's certificate")
	fs.StringVar(&c.etcd.Cert, "etcd-cert", "", "PEM client certificate for etcd")
	fs.StringVar(&c.etcd.Key, "etcd-key", "", "PEM client key for etcd")
	fs.StringVar(&c.etcd.Username, "etcd-user", "", "etcd user (password from env "+envPassword+")")
	fs.StringVar(&c.db, "db", "", "the books: sqlite:PATH or mysql://USER[:PASS]@HOST:PORT/DB (required)")
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "HTTP/JSON API listen address (\"\" turns it off)")
	fs.StringVar(&c.grpc, "grpc", "", "gRPC API listen address (\"\" turns it off)")
	fs.StringVar(&c.advertiseHTTP, "advertise-http", "", "host:port routers reach the HTTP API at (default the listen address)")
	fs.StringVar(&c.advertiseGRPC, "advertise-grpc", "", "host:port routers reach the gRPC API at (default the listen address)")
	fs.StringVar(&c.bankURL, "bank-url", "", "run a virtual bank in this process whose callbacks go to this base URL (normally the cellrouter)")
	fs.StringVar(&c.bankSubmitURL, "bank-submit-url", "", "submit top-ups and withdrawals to a `paycell bank` server at this URL instead")
	c.bank.register(fs, "bank-")
	fs.DurationVar(&c.settleEvery, "settle-every", time.Second, "merchant settlement period (0 turns the settler off)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "how long a shutdown waits for requests in flight")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", 5*time.Second, "TTL of the instance's etcd lease; the guard fences itself when it cannot renew it")
	c.log.register(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return c, err
		}
		return c, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected arguments %q", fs.Args())
	}
	if c.cluster == "" {
		c.cluster, _ = env(envCluster)
	}
	if c.cluster == "" {
		c.cluster = etcdstore.DefaultCluster
	}
	if etcdList == "" {
		etcdList, _ = env(envEtcd)
	}
	if etcdList == "" {
		etcdList = "http://127.0.0.1:2379"
	}
	for _, ep := range strings.Split(etcdList, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.etcd.Endpoints = append(c.etcd.Endpoints, ep)
		}
	}
	c.etcd.Password, _ = env(envPassword)
	if c.instance == "" && c.cell != "" {
		c.instance = c.cell + "-" + hostName()
	}
	return c, c.check()
}

// hostName is the host name cut to what an instance name allows.
func hostName() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '-'
	}, h)
	h = strings.Trim(h, "-._")
	if len(h) > 40 {
		h = strings.Trim(h[:40], "-._")
	}
	if h == "" {
		return "0"
	}
	return h
}

func (c cellConfig) check() error {
	if c.cell == "" {
		return usagef("--cell is required")
	}
	if err := (router.Cell{ID: c.cell, IDC: "x", State: router.StateActive}).Check(); err != nil {
		return usagef("--cell %q: want 1-63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric", c.cell)
	}
	if err := (router.Cell{ID: c.instance, IDC: "x", State: router.StateActive}).Check(); err != nil {
		return usagef("--instance %q: want 1-63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric", c.instance)
	}
	if err := etcdstore.CheckCluster(c.cluster); err != nil {
		return usagef("--cluster: %v", err)
	}
	if err := c.etcd.Validate(); err != nil {
		return usagef("--etcd: %v", err)
	}
	if c.db == "" {
		return usagef("--db is required (sqlite:PATH or mysql://USER@HOST:PORT/DB)")
	}
	if _, err := sqldb.ParseDSN(c.db); err != nil {
		return usagef("--db: %v", err)
	}
	if c.http == "" && c.grpc == "" {
		return usagef("--http and --grpc are both off; serve at least one")
	}
	for name, addr := range map[string]string{"http": c.http, "grpc": c.grpc, "advertise-http": c.advertiseHTTP, "advertise-grpc": c.advertiseGRPC} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return usagef("--%s %q: want host:port (%v)", name, addr, err)
		}
	}
	if c.bankURL != "" && c.bankSubmitURL != "" {
		return usagef("--bank-url runs a bank in this process, --bank-submit-url uses another one: give one of them")
	}
	for name, u := range map[string]string{"bank-url": c.bankURL, "bank-submit-url": c.bankSubmitURL} {
		if u == "" {
			continue
		}
		if err := checkURL(u); err != nil {
			return usagef("--%s: %v", name, err)
		}
	}
	if err := c.bank.check("bank-"); err != nil {
		return err
	}
	if c.settleEvery < 0 || c.drainTimeout <= 0 {
		return usagef("--settle-every must be 0 or more and --drain-timeout more than 0")
	}
	if c.leaseTTL < time.Second {
		return usagef("--lease-ttl %v: want at least 1s (etcd leases count whole seconds)", c.leaseTTL)
	}
	return c.log.check()
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: want a URL like http://127.0.0.1:8080", s)
	}
	return nil
}

// bankConfig is the bank command's configuration.
type bankConfig struct {
	listen      string
	callbackURL string
	bank        bankFlags
	log         logFlags
}

func parseBank(args []string) (bankConfig, error) {
	var c bankConfig
	fs := flag.NewFlagSet("paycell bank", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8090", "address the bank's HTTP API listens on")
	fs.StringVar(&c.callbackURL, "callback-url", "", "base URL callbacks are POSTed to, normally the cellrouter (required)")
	c.bank.register(fs, "")
	c.log.register(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return c, err
		}
		return c, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected arguments %q", fs.Args())
	}
	if c.callbackURL == "" {
		return c, usagef("--callback-url is required")
	}
	if err := checkURL(c.callbackURL); err != nil {
		return c, usagef("--callback-url: %v", err)
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return c, usagef("--listen %q: want host:port (%v)", c.listen, err)
	}
	if err := c.bank.check(""); err != nil {
		return c, err
	}
	return c, c.log.check()
}
