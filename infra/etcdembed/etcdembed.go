package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/soheilhy/cmux"
	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults applied to zero fields of Config.
const (
	DefaultName         = "cellkit"
	DefaultHost         = "127.0.0.1"
	DefaultLogLevel     = "error"
	DefaultStartTimeout = 30 * time.Second
)

// How often a port is probed while waiting for it to become free again.
const portPollInterval = 20 * time.Millisecond

// Config configures an embedded etcd member. The zero value of every field
// except Dir means "use the default".
type Config struct {
	// Dir is the data directory (etcd's --data-dir). Required. It is
	// created with mode 0700 if missing. A directory that already holds
	// an etcd member is reused: the member restarts from its WAL and
	// keeps its data, it is not bootstrapped as a new cluster.
	Dir string

	// Name is the member name. Default "cellkit". It must not contain
	// whitespace, ',' or '=' (it is written into etcd's initial-cluster).
	Name string

	// ClientAddr is the host:port that serves clients (gRPC and the
	// HTTP gateway, plain http). Default "127.0.0.1:0". Host must be an
	// IP literal or "localhost"; port 0 means a free port picked at Start
	// and kept for the life of the Server, including across Restart.
	ClientAddr string

	// PeerAddr is the host:port for raft peer traffic, same rules as
	// ClientAddr. Default "127.0.0.1:0". A single member never gets peer
	// traffic but etcd still listens.
	PeerAddr string

	// LogLevel is the level of etcd's own zap logger, written to stderr:
	// "debug", "info", "warn" or "error". Default "error", so tests and
	// the CLI do not print etcd's chatter.
	LogLevel string

	// StartTimeout bounds how long Start and Restart wait for the member
	// to serve, in addition to the caller's context. Default 30s.
	StartTimeout time.Duration

	// InitialCluster is etcd's --initial-cluster, "name=peerURL,...",
	// naming every member of a new cluster including this one. Default:
	// this member alone. It must name Name, and PeerAddr must then have a
	// fixed port, since the others dial the URL given here. It is used
	// only to bootstrap: a directory that already holds a member keeps
	// the membership recorded in it. StartCluster sets it for its members.
	InitialCluster string

	// InitialClusterToken is etcd's --initial-cluster-token. Members
	// bootstrapped with different tokens form different clusters, so a
	// stray member of one cannot join another. Default "etcd-cluster".
	InitialClusterToken string
}

// DefaultConfig returns the configuration used for `cellctl dev` and tests:
// a member named "cellkit" in dir, on free loopback ports, logging errors only.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:          dir,
		Name:         DefaultName,
		ClientAddr:   net.JoinHostPort(DefaultHost, "0"),
		PeerAddr:     net.JoinHostPort(DefaultHost, "0"),
		LogLevel:     DefaultLogLevel,
		StartTimeout: DefaultStartTimeout,
	}
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Dir)
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.ClientAddr == "" {
		c.ClientAddr = d.ClientAddr
	}
	if c.PeerAddr == "" {
		c.PeerAddr = d.PeerAddr
	}
	if c.LogLevel == "" {
		c.LogLevel = d.LogLevel
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	return c
}

// Validate reports the first problem with c, wrapped around ErrInvalidConfig.
// Zero fields are valid (they mean the default) except Dir.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Dir == "" {
		return invalid("Dir is required")
	}
	if strings.ContainsAny(c.Name, ",= \t\r\n") {
		return invalid("Name %q must not contain whitespace, ',' or '='", c.Name)
	}
	if err := checkAddr(c.ClientAddr); err != nil {
		return invalid("ClientAddr: %v", err)
	}
	if err := checkAddr(c.PeerAddr); err != nil {
		return invalid("PeerAddr: %v", err)
	}
	if _, cp, _ := net.SplitHostPort(c.ClientAddr); cp != "0" && sameAddr(c.ClientAddr, c.PeerAddr) {
		return invalid("ClientAddr and PeerAddr are both %s", c.ClientAddr)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return invalid("LogLevel %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.StartTimeout < 0 {
		return invalid("StartTimeout %v is negative", c.StartTimeout)
	}
	if c.InitialCluster != "" {
		urls, err := types.NewURLsMap(c.InitialCluster)
		if err != nil {
			return invalid("InitialCluster %q: %v", c.InitialCluster, err)
		}
		if _, ok := urls[c.Name]; !ok {
			return invalid("InitialCluster %q does not name this member %q", c.InitialCluster, c.Name)
		}
		if addrPort(c.PeerAddr) == "0" {
			return invalid("PeerAddr %s: a member of InitialCluster needs a fixed peer port", c.PeerAddr)
		}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("host %q: want an IP literal or localhost", host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("port %q: want 0..65535", port)
	}
	return nil
}

func sameAddr(a, b string) bool {
	ah, ap, _ := net.SplitHostPort(a)
	bh, bp, _ := net.SplitHostPort(b)
	if ap != bp {
		return false
	}
	if ah == bh {
		return true
	}
	ai, bi := net.ParseIP(ah), net.ParseIP(bh)
	return ai != nil && bi != nil && ai.Equal(bi)
}

// ErrInvalidConfig is wrapped by every error from Config.Validate.
var ErrInvalidConfig = errors.New("etcdembed: invalid config")

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("etcdembed: server closed")

// ErrStartTimeout is returned when the member is not serving within
// Config.StartTimeout.
var ErrStartTimeout = errors.New("etcdembed: etcd did not become ready in time")

// DataDirError reports a data directory that cannot be created or written.
type DataDirError struct {
	Path string
	Err  error
}

func (e *DataDirError) Error() string {
	return fmt.Sprintf("etcdembed: data dir %s is not usable: %v", e.Path, e.Err)
}

func (e *DataDirError) Unwrap() error { return e.Err }

// ListenError reports an address etcd cannot listen on. Role is "client" or
// "peer". errors.Is(err, syscall.EADDRINUSE) tells a port already in use.
type ListenError struct {
	Role string
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	if errors.Is(e.Err, syscall.EADDRINUSE) {
		return fmt.Sprintf("etcdembed: %s address %s is already in use", e.Role, e.Addr)
	}
	return fmt.Sprintf("etcdembed: cannot listen on %s address %s: %v", e.Role, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Server is a running (or, after a failed Restart, stopped) single-member
// etcd. Its methods are safe for concurrent use.
type Server struct {
	cfg Config // defaults applied

	// Resolved at Start and kept across Restart: listen addresses with
	// ports fixed, and the URLs advertised for them.
	clientListen, peerListen string
	clientURL, peerURL       url.URL

	mu     sync.Mutex
	run    *instance // nil while stopped
	closed bool

	// live is run's etcd while it serves, for readers that must not wait
	// on mu, which is held through a whole start or stop.
	live atomic.Pointer[embed.Etcd]
}

// instance is one run of etcd, from a start to a stop.
type instance struct {
	etcd *embed.Etcd

	// stopping is cancelled when the run begins to stop. It ends client
	// streams (watches, lease keep-alives) so etcd's graceful gRPC stop
	// need not wait its full request timeout (7s) for them, and it quiets
	// the logger's shutdown noise.
	stopping context.Context
	stop     context.CancelFunc
}

func newInstance() *instance {
	in := &instance{}
	in.stopping, in.stop = context.WithCancel(context.Background())
	return in
}

// close stops etcd and returns once it has stopped: servers and listeners
// closed, raft loop and etcd's goroutines exited.
func (in *instance) close() {
	in.stop()
	in.etcd.Close()
	<-in.etcd.Server.StopNotify()
}

// kill stops etcd like close, but stops the raft member first, as a crash
// would: a leader does not hand leadership over (which waits up to 7s for
// a peer that may be going away too), and requests in flight fail at once.
// What etcd acknowledged is in its WAL already.
func (in *instance) kill() {
	in.stop()
	in.etcd.Server.HardStop()
	in.etcd.Close()
	<-in.etcd.Server.StopNotify()
}

// streamInterceptor ends a client stream when the run stops, with
// codes.Unavailable so that clients reconnect and resume (a watch survives
// Restart) instead of treating it as a final cancellation.
func (in *instance) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(in.stopping, cancel)()
	err := handler(srv, &stoppableStream{ServerStream: ss, ctx: ctx})
	if in.stopping.Err() != nil && ss.Context().Err() == nil {
		return status.Error(codes.Unavailable, "etcdembed: etcd is stopping")
	}
	return err
}

type stoppableStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stoppableStream) Context() context.Context { return s.ctx }

// Start starts a member as described by cfg and returns once it serves
// clients. ctx bounds only the start, not the life of the Server; call Close
// to stop it.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	return startServer(ctx, cfg, "")
}

// startServer is Start with advertisePeer (host:port), when set, advertised
// as the peer URL in place of PeerAddr, for a member that its peers reach
// through a relay.
func startServer(ctx context.Context, cfg Config, advertisePeer string) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := prepareDir(cfg.Dir); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg}
	for attempt := 0; ; attempt++ {
		if err := s.resolveAddrs(cfg); err != nil {
			return nil, err
		}
		if advertisePeer != "" {
			s.peerURL = url.URL{Scheme: "http", Host: advertisePeer}
		}
		err := s.start(ctx, false)
		if err == nil {
			return s, nil
		}
		// Another process may take a picked free port between the pick
		// and etcd's bind; pick again.
		var le *ListenError
		if attempt < 3 && errors.As(err, &le) && errors.Is(err, syscall.EADDRINUSE) &&
			addrPort(addrFor(cfg, le.Role)) == "0" {
			continue
		}
		return nil, err
	}
}

// Endpoints returns the client URLs, e.g. ["http://127.0.0.1:23791"], for
// clientv3.Config.Endpoints. They stay the same across Restart.
func (s *Server) Endpoints() []string { return []string{s.ClientURL()} }

// ClientURL returns the client URL, e.g. "http://127.0.0.1:23791".
func (s *Server) ClientURL() string { return s.clientURL.String() }

// Name returns the member name.
func (s *Server) Name() string { return s.cfg.Name }

// Close stops the member and returns once it has stopped and released its
// ports. Closing again is a no-op.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.stopLocked()
	return nil
}

// Restart stops the member and starts it again on the same data directory
// and the same addresses, returning once it serves clients. Clients keep
// their endpoints; watches reconnect and resume. If the second start fails
// the Server stays stopped and Restart may be called again.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stopLocked()
	return s.startLocked(ctx, true)
}

// kill stops the member as a crash would (see instance.kill), keeping its
// data, unless it is stopped already. With andClose set the Server is
// closed too, as by Close.
func (s *Server) kill(andClose bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if andClose {
		s.closed = true
	}
	if s.run != nil {
		s.live.Store(nil)
		s.run.kill()
		s.run = nil
	}
}

// resume starts a stopped member again on its data directory and
// addresses, like Restart; a running member is left alone.
func (s *Server) resume(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.run != nil {
		return nil
	}
	return s.startLocked(ctx, true)
}

// running reports whether the member serves.
func (s *Server) running() bool { return s.live.Load() != nil }

// raftStatus returns the member's ID and the leader it follows (0 for
// none), the values etcd's Maintenance.Status reports as Header.MemberId
// and Leader. ok is false while the member is stopped.
func (s *Server) raftStatus() (id, leader uint64, ok bool) {
	e := s.live.Load()
	if e == nil {
		return 0, 0, false
	}
	return uint64(e.Server.MemberID()), uint64(e.Server.Leader()), true
}

func (s *Server) start(ctx context.Context, wait bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(ctx, wait)
}

// startLocked starts etcd and waits until it serves. With wait set (Restart)
// it first waits for the ports to be free: the previous member has released
// them, but the kernel or a straggling process may hold them for a moment.
// Without it an occupied port fails at once. Probing first also keeps etcd
// from logging its own bind errors.
func (s *Server) startLocked(ctx context.Context, wait bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("etcdembed: start: %w", err)
	}

	if err := probeListen(ctx, wait, "client", s.clientListen); err != nil {
		return err
	}
	if err := probeListen(ctx, wait, "peer", s.peerListen); err != nil {
		return err
	}

	in := newInstance()
	ec, err := s.embedConfig(in)
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return s.startError(err)
	}
	in.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		s.run = in
		s.live.Store(e)
		return nil
	case err = <-e.Err():
		err = s.startError(err)
	case <-e.Server.StopNotify():
		err = errors.New("etcdembed: etcd stopped while starting")
	case <-ctx.Done():
		err = fmt.Errorf("etcdembed: start: %w", ctx.Err())
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (StartTimeout %s or the caller's deadline): %w", ErrStartTimeout, s.cfg.StartTimeout, ctx.Err())
		}
	}
	in.close()
	return err
}

func (s *Server) stopLocked() {
	if s.run != nil {
		s.live.Store(nil)
		s.run.close()
		s.run = nil
	}
}

// startError gives listen failures a typed error naming the address.
func (s *Server) startError(err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("etcdembed: start: %w", err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		if sameAddr(oe.Addr.String(), s.peerListen) {
			return &ListenError{Role: "peer", Addr: s.peerListen, Err: err}
		}
	}
	return &ListenError{Role: "client", Addr: s.clientListen, Err: err}
}

// embedConfig returns the etcd configuration for one run.
func (s *Server) embedConfig(in *instance) (*embed.Config, error) {
	lg, err := newLogger(s.cfg.LogLevel, in.stopping)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: logger: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = s.cfg.Name
	ec.Dir = s.cfg.Dir
	ec.ListenClientUrls = []url.URL{{Scheme: "http", Host: s.clientListen}}
	ec.AdvertiseClientUrls = []url.URL{s.clientURL}
	ec.ListenPeerUrls = []url.URL{{Scheme: "http", Host: s.peerListen}}
	ec.AdvertisePeerUrls = []url.URL{s.peerURL}
	ec.InitialCluster = s.cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = ec.InitialClusterFromName(s.cfg.Name)
	}
	if s.cfg.InitialClusterToken != "" {
		ec.InitialClusterToken = s.cfg.InitialClusterToken
	}
	// "new" is right for a fresh and for an existing directory: with a WAL
	// present etcd restarts the member from it and ignores the initial
	// cluster settings. "existing" would make a fresh member try to join.
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.Logger = "zap"
	ec.LogLevel = s.cfg.LogLevel
	ec.LogOutputs = []string{embed.StdErrLogOutput}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainStreamInterceptor(in.streamInterceptor)}
	return ec, nil
}

// newLogger builds etcd's usual stderr logger at level, minus the errors
// etcd logs about its own listeners and servers closing while it shuts
// down ("setting up serving from embedded etcd failed." with "http: Server
// closed" and the like). Those appear on every Close even at error level.
func newLogger(level string, stopping context.Context) (*zap.Logger, error) {
	lcfg := logutil.DefaultZapLoggerConfig
	lcfg.Level = zap.NewAtomicLevelAt(logutil.ConvertToZapLevel(level))
	lcfg.OutputPaths = []string{embed.StdErrLogOutput}
	lcfg.ErrorOutputPaths = []string{embed.StdErrLogOutput}
	return lcfg.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &quietCore{Core: c, stopping: stopping}
	}))
}

// quietCore drops entries that carry a "closed" error once stopping is done.
type quietCore struct {
	zapcore.Core
	stopping context.Context
}

func (c *quietCore) With(fields []zapcore.Field) zapcore.Core {
	return &quietCore{Core: c.Core.With(fields), stopping: c.stopping}
}

func (c *quietCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *quietCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	for _, f := range fields {
		err, ok := f.Interface.(error)
		if !ok || f.Type != zapcore.ErrorType {
			continue
		}
		if c.stopping.Err() != nil && isClosedErr(err) {
			return nil
		}
		if isStorageVersionNoise(ent.Message, err) {
			return nil
		}
	}
	return c.Core.Write(ent, fields)
}

// isStorageVersionNoise tells the error a new multi-member cluster logs
// while its storage schema is not yet complete; etcd retries a few seconds
// later and allows the message in its own no-error-logs test
// (etcd-io/etcd#18978, #20495). etcd returns it unwrapped, so only its
// text identifies it.
func isStorageVersionNoise(msg string, err error) bool {
	return msg == "failed to update storage version" &&
		strings.Contains(err.Error(), "cannot detect storage schema version")
}

func isClosedErr(err error) bool {
	return errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, cmux.ErrServerClosed) || errors.Is(err, cmux.ErrListenerClosed) ||
		errors.Is(err, grpc.ErrServerStopped)
}

// resolveAddrs fixes the client and peer URLs, picking free ports for port 0.
func (s *Server) resolveAddrs(cfg Config) error {
	var err error
	if s.clientListen, err = resolveAddr("client", cfg.ClientAddr); err != nil {
		return err
	}
	if s.peerListen, err = resolveAddr("peer", cfg.PeerAddr); err != nil {
		return err
	}
	s.clientURL = url.URL{Scheme: "http", Host: advertiseAddr(s.clientListen)}
	s.peerURL = url.URL{Scheme: "http", Host: advertiseAddr(s.peerListen)}
	return nil
}

func addrFor(cfg Config, role string) string {
	if role == "peer" {
		return cfg.PeerAddr
	}
	return cfg.ClientAddr
}

func addrPort(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// resolveAddr returns addr with a free port in place of port 0.
func resolveAddr(role, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w: %s address %q: %v", ErrInvalidConfig, role, addr, err)
	}
	if port == "0" {
		// The port is free once the probe is closed; etcd binds it a
		// moment later (Start retries if someone else took it).
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return "", &ListenError{Role: role, Addr: addr, Err: err}
		}
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	return net.JoinHostPort(host, port), nil
}

// advertiseAddr returns a dialable form of a listen address: an unspecified
// host (0.0.0.0, ::) becomes loopback. The advertised URL is what Endpoints
// returns and what the member records in its cluster membership.
func advertiseAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// probeListen reports whether addr can be bound. With wait set it polls
// while the address is in use, until ctx is done.
func probeListen(ctx context.Context, wait bool, role, addr string) error {
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			return nil
		}
		if !wait || !errors.Is(err, syscall.EADDRINUSE) {
			return &ListenError{Role: role, Addr: addr, Err: err}
		}
		t := time.NewTimer(portPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return &ListenError{Role: role, Addr: addr, Err: err}
		case <-t.C:
		}
	}
}

// prepareDir creates dir if needed and checks that files can be created in
// it, so that a bad path fails here with its name rather than deep in etcd.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return &DataDirError{Path: dir, Err: err}
	}
	f, err := os.CreateTemp(dir, ".etcdembed-probe-*")
	if err != nil {
		return &DataDirError{Path: dir, Err: err}
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return &DataDirError{Path: dir, Err: err}
	}
	return nil
}
