package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/bank"
	"github.com/cellkit/cellkit/paycell/cellsrv"
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

// run is paycell until ctx ends (a signal), then a graceful stop; it
// returns the exit code.
func run(ctx context.Context, args []string, stderr io.Writer, env func(string) (string, bool)) int {
	if len(args) > 0 && args[0] == "bank" {
		return runBank(ctx, args[1:], stderr)
	}
	cfg, err := parseCell(args, env)
	if code, done := usage(err, stderr, cellUsage); done {
		return code
	}
	log := newLogger(cfg.log, stderr)
	if err := serveCell(ctx, cfg, log); err != nil {
		log.Error("paycell stopped", "err", err)
		return exitRuntime
	}
	return exitOK
}

// usage reports a parse error; done says the command must exit with code.
func usage(err error, stderr io.Writer, text string) (code int, done bool) {
	if err == nil {
		return 0, false
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, text)
		return exitOK, true
	}
	fmt.Fprintf(stderr, "paycell: %v\nRun paycell -h for usage.\n", err)
	return exitUsage, true
}

func newLogger(c logFlags, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.level))
	opts := &slog.HandlerOptions{Level: level}
	if c.format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serveCell(ctx context.Context, c cellConfig, log *slog.Logger) error {
	cli, err := etcdstore.Dial(ctx, c.etcd)
	if err != nil {
		return err
	}
	defer cli.Close()

	var bk paycell.BankChannel
	if c.bankURL != "" {
		b, err := bank.New(bank.Config{CallbackURL: c.bankURL, Delay: c.bank.delay, FailureRate: c.bank.failureRate, Seed: c.bank.seed, Logger: log})
		if err != nil {
			return err
		}
		// Closed after the cell: callbacks being delivered then are
		// dropped, and the cell hands their operations over again when it
		// restarts (they are still pending in its books).
		defer b.Close()
		bk = b
	} else if c.bankSubmitURL != "" {
		bk = bank.NewClient(c.bankSubmitURL, &http.Client{Timeout: 10 * time.Second})
	} else {
		log.Warn("no bank: top-ups and withdrawals stay pending until a callback arrives (see --bank-url)")
	}

	cfg := cellsrv.Config{
		Cluster: c.cluster, Cell: c.cell, Instance: c.instance, Etcd: cli, DSN: c.db,
		AdvertiseHTTP: c.advertiseHTTP, AdvertiseGRPC: c.advertiseGRPC,
		Bank: bk, SettleEvery: c.settleEvery, DrainTimeout: c.drainTimeout,
		Guard:  etcdcell.Config{LeaseTTL: c.leaseTTL, FenceMargin: min(time.Second, c.leaseTTL/5)},
		Logger: log,
	}
	if c.settleEvery == 0 {
		cfg.SettleEvery = -1
	}
	for _, l := range []struct {
		addr string
		dst  *net.Listener
	}{{c.http, &cfg.HTTP}, {c.grpc, &cfg.GRPC}} {
		if l.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			if cfg.HTTP != nil {
				cfg.HTTP.Close()
			}
			return err
		}
		*l.dst = lis
	}
	cell, err := cellsrv.NewCell(ctx, cfg)
	if err != nil {
		if errors.Is(err, etcdstore.ErrNoMap) {
			return fmt.Errorf("cluster %q has no map yet; create one with `cellctl map init`: %w", c.cluster, err)
		}
		return err
	}
	<-ctx.Done()
	log.Info("stopping: draining requests, then closing the books", "drain_timeout", c.drainTimeout)
	return cell.Close()
}

func runBank(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseBank(args)
	if code, done := usage(err, stderr, bankUsage); done {
		return code
	}
	log := newLogger(cfg.log, stderr)
	if err := serveBank(ctx, cfg, log); err != nil {
		log.Error("paycell bank stopped", "err", err)
		return exitRuntime
	}
	return exitOK
}

func serveBank(ctx context.Context, c bankConfig, log *slog.Logger) error {
	b, err := bank.New(bank.Config{CallbackURL: c.callbackURL, Delay: c.bank.delay, FailureRate: c.bank.failureRate, Seed: c.bank.seed, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("virtual bank serving", "listen", lis.Addr().String(), "callbacks", c.callbackURL, "failure_rate", c.bank.failureRate, "seed", c.bank.seed)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	t := b.Totals()
	log.Info("virtual bank stopped", "ops", t.Ops, "deposits", t.Deposits, "payouts", t.Payouts, "delivered", t.Delivered, "rejected", t.Rejected, "dropped", t.Dropped)
	return err
}

const cellUsage = `paycell runs one instance of a payment cell: accounts, orders, payments,
refunds, top-ups and withdrawals over double-entry books, behind the cell guard.

Usage:
  paycell --cell ID --db DSN [flags]     serve a cell
  paycell bank --callback-url URL        serve a virtual bank over HTTP

Flags:
  --cluster NAME        etcd prefix /cellkit/<cluster>/ (default "default", env CELLKIT_CLUSTER)
  --cell ID             the cell this instance serves (required)
  --instance NAME       unique within the cell (default <cell>-<host name>)
  --etcd URLS           etcd endpoints, comma-separated (default http://127.0.0.1:2379, env CELLKIT_ETCD)
  --etcd-cacert, --etcd-cert, --etcd-key FILE   TLS to etcd
  --etcd-user NAME      etcd user; the password comes from CELLKIT_ETCD_PASSWORD
  --db DSN              sqlite:PATH or mysql://USER[:PASS]@HOST:PORT/DB (required)
  --http ADDR           HTTP/JSON API (default 127.0.0.1:8080; "" turns it off)
  --grpc ADDR           gRPC API cellkit.paycell.v1.PayCell (default off)
  --advertise-http, --advertise-grpc HOST:PORT   what routers dial (default the listen addresses)
  --bank-url URL        run a virtual bank in this process; callbacks go to URL (the cellrouter)
  --bank-submit-url URL submit to a 'paycell bank' server instead
  --bank-delay D, --bank-failure-rate F, --bank-seed N   the in-process bank's behaviour
  --settle-every D      merchant settlement period (default 1s; 0 = off)
  --drain-timeout D     graceful stop bound (default 10s)
  --lease-ttl D         etcd lease TTL of the guard (default 5s)
  --log-level L         debug, info, warn, error (default info)
  --log-format F        json or text (default json)

The slot count comes from the cluster's map, which must exist (cellctl map init).
SIGTERM or SIGINT stops gracefully: requests in flight finish, the instance
leaves etcd, the books close. Exit codes: 0 stopped, 1 runtime error, 2 usage.
`

const bankUsage = `paycell bank serves a virtual bank channel over HTTP (POST /v1/ops,
GET /v1/ops, GET /v1/totals). It decides each operation after --delay and posts
the outcome to {callback-url}/v1/bank/callbacks/{opId}, retrying until a cell
acknowledges it.

Flags:
  --listen ADDR         (default 127.0.0.1:8090)
  --callback-url URL    where callbacks go, normally the cellrouter (required)
  --delay D             decision delay (default 50ms)
  --failure-rate F      share of failed operations, 0 to 1 (default 0)
  --seed N              decisions are deterministic per seed and operation ID (default 1)
  --log-level L, --log-format F
`
