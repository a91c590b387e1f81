package mysqllab

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Defaults of Config.
const (
	DefaultSemiSyncTimeout = time.Hour
	DefaultStartTimeout    = 60 * time.Second
	DefaultStopTimeout     = 30 * time.Second
)

// DefaultServers are the servers of a lab whose Config names none: one per
// IDC of the demo cluster.
var DefaultServers = []string{"idc-a", "idc-b"}

// Errors.
var (
	// ErrInvalidConfig is returned by Validate.
	ErrInvalidConfig = errors.New("mysqllab: invalid config")
	// ErrNotInstalled means mariadbd or mariadb-install-db is missing (or is
	// not MariaDB 10.3 or newer).
	ErrNotInstalled = errors.New("mysqllab: MariaDB is not installed (run scripts/tools/mariadb.sh)")
	// ErrExists is returned by Start for a directory that already holds a
	// lab: Attach to it instead.
	ErrExists = errors.New("mysqllab: a lab already exists in the directory")
	// ErrNoLab is returned by Attach for a directory without a lab.
	ErrNoLab = errors.New("mysqllab: no lab in the directory")
	// ErrUnknownServer names a server the lab does not have.
	ErrUnknownServer = errors.New("mysqllab: unknown server")
	// ErrNotRunning is returned for an operation on a server that is down.
	ErrNotRunning = errors.New("mysqllab: server not running")
	// ErrStart is returned when a server does not start or replication does
	// not come up in time; the message carries the end of its error log.
	ErrStart = errors.New("mysqllab: start failed")
)

// Config says what lab to start. Zero values mean the defaults.
type Config struct {
	// Dir holds the lab: lab.json (ports, pids, settings) and one directory
	// per server with its data, socket, pid file and logs. Required;
	// created if missing. It must not hold a lab already (see Attach).
	Dir string
	// Servers names the servers, one per IDC. Server i (from 0) gets
	// server_id and gtid_domain_id i+1 and replicates from every other
	// server (a replication connection named after each). Names are
	// lower-case letters, digits and '-', start with a letter, at most 32
	// characters. Default DefaultServers ("idc-a", "idc-b").
	Servers []string
	// BasePort is the TCP port of the first server on 127.0.0.1; server i
	// listens on BasePort+i. Default 0: free ports picked at start.
	BasePort int
	// Async turns semi-synchronous replication off: every direction then
	// replicates asynchronously. Default false: semi-sync is on in every
	// direction (each server is a semi-sync master and replica).
	Async bool
	// SemiSyncTimeout is rpl_semi_sync_master_timeout: how long a commit
	// waits for a replica's acknowledgement before the master falls back
	// to asynchronous replication. Default DefaultSemiSyncTimeout (1h):
	// long, so that a lab never falls back silently; a commit blocks while
	// no replica can acknowledge it, which is what semi-sync promises.
	// At most 49 days (MariaDB's limit).
	SemiSyncTimeout time.Duration
	// KeepData makes Close leave the servers' data and logs in Dir.
	// Default false: Close removes what the lab put there.
	KeepData bool
	// Detach starts the servers in a session of their own, not tied to
	// this process, so that they outlive it (cellctl lab up); Attach finds
	// them again. Default false: the servers are killed when the process
	// that started them dies, so a crashed test leaves none behind.
	Detach bool
	// StartTimeout bounds Start (and Restart) in addition to its context.
	// Default DefaultStartTimeout (60s).
	StartTimeout time.Duration
	// StopTimeout is how long a graceful stop waits for a server to exit
	// before it is killed. Default DefaultStopTimeout (30s).
	StopTimeout time.Duration
	// Mariadbd and InstallDB are the server and bootstrap binaries.
	// Default: "mariadbd" and "mariadb-install-db" on PATH, else in
	// /usr/sbin, /usr/libexec or /usr/bin.
	Mariadbd, InstallDB string
	// Options are extra mariadbd options, passed after the lab's own (so
	// they win), e.g. "--innodb-flush-log-at-trx-commit=2".
	Options []string
	// Logf, if set, receives a line for each step (tests pass t.Logf).
	Logf func(format string, args ...any)
}

// DefaultConfig returns the defaults with Dir set.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:             dir,
		Servers:         append([]string(nil), DefaultServers...),
		SemiSyncTimeout: DefaultSemiSyncTimeout,
		StartTimeout:    DefaultStartTimeout,
		StopTimeout:     DefaultStopTimeout,
	}
}

var serverName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// maxSemiSyncTimeout is rpl_semi_sync_master_timeout's maximum, in ms.
const maxSemiSyncTimeout = time.Duration(1<<32-1) * time.Millisecond

// Validate checks the fields and how they fit together.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Dir == "" {
		return bad("Dir is required")
	}
	seen := map[string]bool{}
	for _, s := range c.Servers {
		if !serverName.MatchString(s) {
			return bad("server name %q: want lower-case letters, digits and '-', starting with a letter, at most 32 characters", s)
		}
		if seen[s] {
			return bad("server %q twice", s)
		}
		seen[s] = true
	}
	n := len(c.Servers)
	if n == 0 {
		n = len(DefaultServers)
	}
	if n > 64 {
		return bad("%d servers: at most 64", n)
	}
	if c.BasePort != 0 && (c.BasePort < 1024 || c.BasePort+n-1 > 65535) {
		return bad("BasePort %d: want 0 (free ports) or 1024..%d for %d servers", c.BasePort, 65535-n+1, n)
	}
	if c.SemiSyncTimeout < 0 || c.SemiSyncTimeout > maxSemiSyncTimeout {
		return bad("SemiSyncTimeout %v: want 0 (default %v) up to %v", c.SemiSyncTimeout, DefaultSemiSyncTimeout, maxSemiSyncTimeout)
	}
	if c.SemiSyncTimeout != 0 && c.SemiSyncTimeout < time.Millisecond {
		return bad("SemiSyncTimeout %v: below MariaDB's 1ms resolution", c.SemiSyncTimeout)
	}
	if c.StartTimeout < 0 {
		return bad("StartTimeout %v is negative", c.StartTimeout)
	}
	if c.StopTimeout < 0 {
		return bad("StopTimeout %v is negative", c.StopTimeout)
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if len(c.Servers) == 0 {
		c.Servers = append([]string(nil), DefaultServers...)
	}
	if c.SemiSyncTimeout == 0 {
		c.SemiSyncTimeout = DefaultSemiSyncTimeout
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}
