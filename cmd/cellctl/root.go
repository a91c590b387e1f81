package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// Environment variables read by cellctl. Flags win over them.
const (
	envEtcd     = "CELLKIT_ETCD"
	envCluster  = "CELLKIT_CLUSTER"
	envActor    = "CELLKIT_ACTOR"
	envPassword = "CELLKIT_ETCD_PASSWORD"
	envDebug    = "CELLKIT_DEBUG"
)

const (
	defaultEtcd    = "http://127.0.0.1:2379"
	defaultTimeout = 10 * time.Second
)

// app is one invocation of cellctl: its streams, environment and global flags.
type app struct {
	ctx    context.Context // canceled on SIGINT/SIGTERM
	env    func(string) (string, bool)
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// Global flags as given.
	etcd, cluster, output string
	cacert, cert, key     string
	user, reason, actor   string
	timeout               time.Duration

	// Resolved by prepare.
	endpoints          []string
	username, password string
}

// runContext runs cellctl with args and returns the exit code. Cancelling
// ctx is what SIGINT does. env looks up environment variables.
func runContext(ctx context.Context, args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) (code int) {
	a := &app{ctx: ctx, env: env, stdin: stdin, stdout: stdout, stderr: stderr}
	defer func() {
		// A bug must still end with a calm message, not a wall of goroutines.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "cellctl: internal error: %v\n", r)
			if v, _ := env(envDebug); v != "" {
				stderr.Write(debug.Stack())
			} else {
				fmt.Fprintf(stderr, "this is a bug in cellctl; rerun with %s=1 for details and report it\n", envDebug)
			}
			code = exitError
		}
	}()
	root := a.newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err != nil {
		report(stderr, cmd, err)
	}
	return exitCode(err)
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cellctl",
		Short: "Operate the cellkit shard map",
		Long: `cellctl operates the cellkit shard map in etcd: which cell owns which slot, cell
states, the whitelist, and the audit log of every change.

Every command that changes the map needs --reason; the reason, who (--actor) and
what changed are written to the audit log in the same transaction as the change.
Changes are compare-and-swap on the map's revision: a lost race is retried on
the new map, never written over it.

Start here:
  cellctl demo                       a one-command tour, nothing to install
  cellctl dev                        a local etcd for trying commands
  cellctl map show                   the current map
  cellctl route u42                  where a key goes
  cellctl cutover plan --from-idc IDC-A --to-idc IDC-B
                                     what a staged move would do

` + exitCodesHelp,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Args:              noSubcommand,
		RunE:              showHelp,
		PersistentPreRunE: a.prepare,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	f := root.PersistentFlags()
	f.StringVar(&a.etcd, "etcd", defaultEtcd, "etcd endpoints, comma-separated (env "+envEtcd+")")
	f.StringVar(&a.cluster, "cluster", etcdstore.DefaultCluster, "cluster name: the map lives under /cellkit/<cluster>/ (env "+envCluster+")")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&a.cacert, "cacert", "", "CA certificate file (PEM) to verify etcd")
	f.StringVar(&a.cert, "cert", "", "client certificate file (PEM), with --key")
	f.StringVar(&a.key, "key", "", "client key file (PEM), with --cert")
	f.StringVar(&a.user, "user", "", "etcd user as name[:password] (password also from env "+envPassword+")")
	f.StringVar(&a.reason, "reason", "", "why you are changing the map; required for every change, kept in the audit log")
	f.StringVar(&a.actor, "actor", "", "who the audit log says made the change (env "+envActor+"; default the etcd user, else user@host)")
	f.DurationVar(&a.timeout, "timeout", defaultTimeout, "how long one command may wait for etcd")

	root.AddCommand(
		a.newDevCmd(),
		a.newMapCmd(),
		a.newCellCmd(),
		a.newWhitelistCmd(),
		a.newRouteCmd(),
		a.newIDCmd(),
		a.newCutoverCmd(),
		a.newDrainCmd(),
		a.newFailoverCmd(),
		a.newSettingsCmd(),
		a.newDemoCmd(),
		a.newTourCmd(),
		a.newLabCmd(),
		a.newDrillCmd(),
		a.newVerifyCmd(),
	)
	return root
}

// prepare resolves and checks the global flags every command uses. The
// etcd flags are checked by connect, so that help and the offline commands
// work whatever CELLKIT_ETCD says.
func (a *app) prepare(cmd *cobra.Command, _ []string) error {
	flags := cmd.Flags()
	fromEnv := func(flag string, dst *string, name string) {
		if flags.Changed(flag) {
			return
		}
		if v, ok := a.env(name); ok && strings.TrimSpace(v) != "" {
			*dst = strings.TrimSpace(v)
		}
	}
	fromEnv("etcd", &a.etcd, envEtcd)
	fromEnv("cluster", &a.cluster, envCluster)
	fromEnv("actor", &a.actor, envActor)

	switch a.output {
	case "table", "json", "yaml":
	default:
		return usagef("-o %q: want table, json or yaml", a.output)
	}
	if a.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration like 10s", a.timeout)
	}
	if a.user != "" {
		name, pw, hasPW := strings.Cut(a.user, ":")
		if name == "" {
			return usagef("--user %q: want name or name:password", a.user)
		}
		if !hasPW {
			pw, _ = a.env(envPassword)
		}
		a.username, a.password = name, pw
	}
	a.reason = strings.TrimSpace(a.reason)
	a.actor = strings.TrimSpace(a.actor)
	if a.actor == "" {
		a.actor = a.username
	}
	if a.actor == "" {
		a.actor = etcdstore.DefaultActor()
	}
	return nil
}

// parseEndpoints splits a comma-separated endpoint list; a bare host:port
// means http://host:port.
func parseEndpoints(s string) ([]string, error) {
	var out []string
	for _, ep := range strings.Split(s, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep
		}
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs") {
			return nil, usagef("--etcd (or %s) endpoint %q: want a URL like http://127.0.0.1:2379", envEtcd, ep)
		}
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, usagef("--etcd is empty: give at least one endpoint like http://127.0.0.1:2379")
	}
	return out, nil
}

// requireReason is called first by every command that changes the map.
func (a *app) requireReason() error {
	if a.reason == "" {
		return usagef(`--reason is required for every change to the map: say why, e.g. --reason "drill 2024-06: canary users to IDC-B"`)
	}
	return nil
}

// session is a connection to the cluster's map for one command, bounded by
// --timeout.
type session struct {
	ctx    context.Context
	cancel context.CancelFunc
	cli    *clientv3.Client
	store  *etcdstore.Store
	a      *app
}

// checkEtcdFlags checks the flags that say how to reach etcd, so that a
// mistake in them is a usage error before anything is dialed.
func (a *app) checkEtcdFlags() error {
	if err := etcdstore.CheckCluster(a.cluster); err != nil {
		return usagef("--cluster: %s", message(err))
	}
	eps, err := parseEndpoints(a.etcd)
	if err != nil {
		return err
	}
	a.endpoints = eps
	if (a.cert == "") != (a.key == "") {
		return usagef("--cert and --key go together")
	}
	for _, f := range []struct{ flag, path string }{{"cacert", a.cacert}, {"cert", a.cert}, {"key", a.key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return usagef("--%s: %v", f.flag, err)
		}
	}
	return nil
}

func (a *app) connect() (*session, error) {
	if err := a.checkEtcdFlags(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	cli, err := etcdstore.Dial(ctx, etcdstore.DialConfig{
		Endpoints:   a.endpoints,
		DialTimeout: a.timeout,
		CACert:      a.cacert,
		Cert:        a.cert,
		Key:         a.key,
		Username:    a.username,
		Password:    a.password,
	})
	if err != nil {
		cancel()
		return nil, a.etcdErr(err)
	}
	st, err := etcdstore.New(cli, etcdstore.Config{Cluster: a.cluster, Actor: a.actor})
	if err != nil {
		cli.Close()
		cancel()
		return nil, err
	}
	return &session{ctx: ctx, cancel: cancel, cli: cli, store: st, a: a}, nil
}

func (s *session) Close() {
	s.cli.Close()
	s.cancel()
}

// etcdErr turns "no answer in time" into an error that names the endpoints
// and the timeout, so it is reported (and exits) as etcd unreachable.
func (a *app) etcdErr(err error) error {
	if err == nil {
		return nil
	}
	if a.ctx.Err() != nil {
		return errInterrupted
	}
	var ue *etcdstore.UnreachableError
	if errors.As(err, &ue) {
		if isAuthError(err) {
			// etcd answered: it refused the login.
			return fmt.Errorf("etcd at %s: %w", strings.Join(ue.Endpoints, ","), ue.Err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return &etcdstore.UnreachableError{Endpoints: ue.Endpoints, Err: fmt.Errorf("no answer within %v (--timeout)", a.timeout)}
		}
		return err
	}
	if errors.Is(err, etcdstore.ErrNoMap) {
		// Most often the wrong cluster or etcd: name both.
		return fmt.Errorf("cluster %q at %s: %w", a.cluster, strings.Join(a.endpoints, ","), err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &etcdstore.UnreachableError{Endpoints: a.endpoints, Err: fmt.Errorf("no answer within %v (--timeout)", a.timeout)}
	}
	return err
}

// load reads the current map.
func (s *session) load() (*router.Table, error) {
	t, _, err := s.store.Load(s.ctx)
	return t, s.a.etcdErr(err)
}

// current connects, reads the map and disconnects: what read-only commands do.
func (a *app) current() (*router.Table, error) {
	s, err := a.connect()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.load()
}

// noSubcommand is the Args check of commands that only group others: a
// stray word is an unknown command, reported as a usage error.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usagef("%s", msg)
}

func showHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// Argument-count checks that report usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("want %s", what)
		}
		return nil
	}
}

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef("want %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// checkKeys checks routing keys given on the command line.
func checkKeys(keys []string) error {
	for _, k := range keys {
		if err := router.CheckKey(k); err != nil {
			return asUsage(err)
		}
	}
	return nil
}

// checkPinnable checks keys to be whitelisted: a slot-bearing ID routes with
// the key it was minted for, so pinning the ID itself would do nothing.
func checkPinnable(keys []string) error {
	if err := checkKeys(keys); err != nil {
		return err
	}
	for _, k := range keys {
		if _, err := router.ParseID(k); err == nil {
			return usagef("key %q is a slot-bearing ID: it routes with the key it was minted for; pin that key", k)
		}
	}
	return nil
}
