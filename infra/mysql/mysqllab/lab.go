package mysqllab

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cellkit/cellkit/infra/mysql"
)

// StateFile is the name of the file in a lab's directory that records its
// servers (ports, pids) and settings, so that Attach can manage a lab
// another process started.
const StateFile = "lab.json"

const stateVersion = 1

// state is lab.json.
type state struct {
	Version int `json:"version"`
	// MariaDB is the server's version line.
	MariaDB string `json:"mariadb,omitempty"`
	// Mariadbd is the server binary the lab was started with.
	Mariadbd          string        `json:"mariadbd"`
	Async             bool          `json:"async"`
	SemiSyncTimeoutMS int64         `json:"semiSyncTimeoutMs"`
	Detach            bool          `json:"detach"`
	KeepData          bool          `json:"keepData"`
	StopTimeoutMS     int64         `json:"stopTimeoutMs"`
	Options           []string      `json:"options,omitempty"`
	Servers           []serverState `json:"servers"`
}

type serverState struct {
	Name string `json:"name"`
	// ID is the server's server_id and gtid_domain_id.
	ID   int `json:"id"`
	Port int `json:"port"`
	PID  int `json:"pid"`
	// Socket is the Unix socket path (under the server's directory unless
	// that path is too long for a socket).
	Socket string `json:"socket"`
	// MasterSemiSync and ReplicaSemiSync are rpl_semi_sync_master_enabled
	// and rpl_semi_sync_slave_enabled, kept across restarts.
	MasterSemiSync  bool `json:"masterSemiSync"`
	ReplicaSemiSync bool `json:"replicaSemiSync"`
}

// Lab is a set of MariaDB servers on loopback ports replicating to each
// other. Its methods are safe for concurrent use.
type Lab struct {
	dir      string
	logf     func(string, ...any)
	startTO  time.Duration
	stopTO   time.Duration
	install  string
	mu       sync.Mutex
	st       state
	procs    map[string]*proc
	dbs      map[string]*sql.DB
	closed   bool
	closeErr error
}

// proc is a server process this Lab started (exited is closed when it
// exits) or found through lab.json (exited is nil).
type proc struct {
	pid    int
	exited chan struct{}
}

// Start creates the lab cfg describes and returns once every server
// answers, every replication connection runs both threads, and (unless
// cfg.Async) semi-sync is on at every master with every peer connected as
// a semi-sync replica. Servers of a directory that holds data from an
// earlier lab (KeepData) start from it. On failure, what Start started is
// stopped again and the error carries the failing server's error log.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	server, install, version, err := binaries(cfg.Mariadbd, cfg.InstallDB)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("mysqllab: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("mysqllab: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err == nil {
		return nil, fmt.Errorf("%w: %s (attach to it, or stop it with Close)", ErrExists, dir)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	l := &Lab{
		dir: dir, logf: cfg.Logf, startTO: cfg.StartTimeout, stopTO: cfg.StopTimeout,
		install: install,
		procs:   map[string]*proc{}, dbs: map[string]*sql.DB{},
		st: state{
			Version: stateVersion, MariaDB: version, Mariadbd: server,
			Async: cfg.Async, SemiSyncTimeoutMS: cfg.SemiSyncTimeout.Milliseconds(),
			Detach: cfg.Detach, KeepData: cfg.KeepData, StopTimeoutMS: cfg.StopTimeout.Milliseconds(),
			Options: slices.Clone(cfg.Options),
		},
	}
	ports, err := l.ports(cfg)
	if err != nil {
		return nil, err
	}
	for i, name := range cfg.Servers {
		l.st.Servers = append(l.st.Servers, serverState{
			Name: name, ID: i + 1, Port: ports[i], Socket: l.socketPath(name),
			MasterSemiSync: !cfg.Async, ReplicaSemiSync: !cfg.Async,
		})
	}
	began := time.Now()
	if err := l.startAll(ctx, cfg.BasePort == 0); err != nil {
		l.abort()
		return nil, err
	}
	l.log("mysqllab: %d servers up in %v; configuring replication", len(cfg.Servers), time.Since(began).Round(time.Millisecond))
	if err := l.configure(ctx); err != nil {
		l.abort()
		return nil, err
	}
	if err := l.WaitReady(ctx); err != nil {
		l.abort()
		return nil, err
	}
	l.log("mysqllab: lab ready in %v: %s", time.Since(began).Round(time.Millisecond), l.summary())
	return l, nil
}

// Attach returns the lab another process started in dir (its lab.json),
// to inspect or stop it. Its servers may be running or not.
func Attach(dir string) (*Lab, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mysqllab: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(abs, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoLab, abs)
	}
	if err != nil {
		return nil, fmt.Errorf("mysqllab: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("mysqllab: %s: unreadable %s: %v", abs, StateFile, err)
	}
	if st.Version != stateVersion || len(st.Servers) == 0 {
		return nil, fmt.Errorf("mysqllab: %s: %s has version %d and %d servers; want version %d", abs, StateFile, st.Version, len(st.Servers), stateVersion)
	}
	install, _ := findBinary("", "mariadb-install-db", "mysql_install_db")
	l := &Lab{
		dir: abs, logf: func(string, ...any) {}, startTO: DefaultStartTimeout,
		stopTO: time.Duration(st.StopTimeoutMS) * time.Millisecond, install: install,
		st: st, procs: map[string]*proc{}, dbs: map[string]*sql.DB{},
	}
	if l.stopTO <= 0 {
		l.stopTO = DefaultStopTimeout
	}
	for _, s := range st.Servers {
		l.procs[s.Name] = &proc{pid: s.PID}
	}
	return l, nil
}

func (l *Lab) log(format string, args ...any) {
	l.mu.Lock()
	f := l.logf
	l.mu.Unlock()
	f(format, args...)
}

// SetLogf sets where progress lines go (an attached lab logs nowhere).
func (l *Lab) SetLogf(f func(string, ...any)) {
	if f == nil {
		f = func(string, ...any) {}
	}
	l.mu.Lock()
	l.logf = f
	l.mu.Unlock()
}

// Dir is the lab's directory (absolute).
func (l *Lab) Dir() string { return l.dir }

// Async reports whether the lab was started without semi-sync.
func (l *Lab) Async() bool { return l.st.Async }

// Servers returns the servers' names in order.
func (l *Lab) Servers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, len(l.st.Servers))
	for i, s := range l.st.Servers {
		names[i] = s.Name
	}
	return names
}

// Port returns server's TCP port on 127.0.0.1. It panics for a server the
// lab does not have: that is a bug in the caller.
func (l *Lab) Port(server string) int { return l.server(server).Port }

// Addr returns server's address, "127.0.0.1:PORT".
func (l *Lab) Addr(server string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port(server)))
}

// DSN returns the infra/sqldb DSN of database on server,
// "mysql://root@127.0.0.1:PORT/DATABASE". It panics for a server the lab
// does not have.
func (l *Lab) DSN(server, database string) string {
	return "mysql://root@" + l.Addr(server) + "/" + database
}

// PID returns server's process ID, 0 when the lab knows of none.
func (l *Lab) PID(server string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mustHave(server)
	return l.procs[server].pid
}

// Running reports whether server's process is alive.
func (l *Lab) Running(server string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mustHave(server)
	return l.aliveLocked(server)
}

// DB returns a root connection pool to server with no default database,
// for statements about the server itself (STOP SLAVE, SET GLOBAL). The lab
// owns it and closes it in Close. It panics for an unknown server.
func (l *Lab) DB(server string) *sql.DB {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dbLocked(server)
}

func (l *Lab) dbLocked(server string) *sql.DB {
	s := l.serverLocked(server)
	if db := l.dbs[server]; db != nil {
		return db
	}
	c := gomysql.NewConfig()
	c.User = "root"
	c.Net = "tcp"
	c.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	c.Timeout = 2 * time.Second
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		panic(fmt.Sprintf("mysqllab: connector for %s: %v", server, err)) // a static config
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(30 * time.Second)
	l.dbs[server] = db
	return db
}

func (l *Lab) server(name string) serverState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serverLocked(name)
}

func (l *Lab) serverLocked(name string) serverState {
	for _, s := range l.st.Servers {
		if s.Name == name {
			return s
		}
	}
	panic(fmt.Sprintf("mysqllab: unknown server %q (the lab has %s)", name, l.namesLocked()))
}

func (l *Lab) mustHave(name string) { l.serverLocked(name) }

func (l *Lab) checkServer(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.st.Servers {
		if s.Name == name {
			return nil
		}
	}
	return fmt.Errorf("%w %q (the lab has %s)", ErrUnknownServer, name, l.namesLocked())
}

func (l *Lab) namesLocked() string {
	names := make([]string, len(l.st.Servers))
	for i, s := range l.st.Servers {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// Paths of a server's files.
func (l *Lab) serverDir(name string) string { return filepath.Join(l.dir, name) }
func (l *Lab) dataDir(name string) string   { return filepath.Join(l.dir, name, "data") }
func (l *Lab) errorLog(name string) string  { return filepath.Join(l.dir, name, "error.log") }

// tmpDir is the server's own temporary directory: servers sharing /tmp
// can collide on temporary table names (seen with parallel
// mariadb-install-db runs).
func (l *Lab) tmpDir(name string) string { return filepath.Join(l.dir, name, "tmp") }

// socketPath is the server's Unix socket: in its directory, unless that
// path is longer than a socket address holds (108 bytes on Linux; deep
// t.TempDir paths are), then in the system temp directory under a name
// derived from the lab's directory.
func (l *Lab) socketPath(name string) string {
	p := filepath.Join(l.dir, name, "mariadbd.sock")
	if len(p) < 100 {
		return p
	}
	h := sha256.Sum256([]byte(l.dir))
	return filepath.Join(os.TempDir(), "cellkit-lab-"+hex.EncodeToString(h[:6])+"-"+name+".sock")
}

// ports returns the servers' ports: BasePort+i, or free ports.
func (l *Lab) ports(cfg Config) ([]int, error) {
	out := make([]int, len(cfg.Servers))
	if cfg.BasePort != 0 {
		for i := range out {
			out[i] = cfg.BasePort + i
		}
		return out, nil
	}
	for i := range out {
		p, err := freePort(out[:i])
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// freePort returns a loopback port nothing listens on, other than taken.
// The port can be taken between now and the server binding it; launch
// then picks another.
func freePort(taken []int) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("mysqllab: find a free port: %w", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !slices.Contains(taken, p) {
			return p, nil
		}
	}
	return 0, errors.New("mysqllab: find a free port: no luck in 20 tries")
}

// startAll initializes the servers that have no data yet and starts every
// server in parallel. mariadb-install-db runs once: the other new servers
// get a copy of its result (a fresh data directory holds no identity of
// its server), which halves a lab's start-up on a small machine.
func (l *Lab) startAll(ctx context.Context, pickPorts bool) error {
	names := l.Servers()
	var fresh []string
	for _, name := range names {
		if err := os.MkdirAll(l.tmpDir(name), 0o755); err != nil {
			return fmt.Errorf("mysqllab: %s: %w", name, err)
		}
		if _, err := os.Stat(filepath.Join(l.dataDir(name), "mysql")); err != nil {
			fresh = append(fresh, name)
		}
	}
	if len(fresh) > 0 {
		if err := l.initialize(ctx, fresh[0]); err != nil {
			return err
		}
		for _, name := range fresh[1:] {
			os.RemoveAll(l.dataDir(name))
			if err := copyDir(l.dataDir(fresh[0]), l.dataDir(name)); err != nil {
				return fmt.Errorf("mysqllab: %s: copy a fresh data directory: %w", name, err)
			}
		}
	}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.launch(ctx, name, pickPorts)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// copyDir copies a directory tree of regular files.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}

// serverArgs are mariadbd's options for one server. --no-defaults comes
// first so no my.cnf on the machine changes the lab.
func (l *Lab) serverArgs(s serverState) []string {
	args := []string{"--no-defaults"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses root without it
	}
	onOff := func(b bool) string {
		if b {
			return "ON"
		}
		return "OFF"
	}
	args = append(args,
		"--datadir="+l.dataDir(s.Name),
		"--socket="+s.Socket,
		"--pid-file="+filepath.Join(l.serverDir(s.Name), "mariadbd.pid"),
		"--log-error="+l.errorLog(s.Name),
		"--tmpdir="+l.tmpDir(s.Name),
		"--bind-address=127.0.0.1",
		"--port="+strconv.Itoa(s.Port),
		"--skip-name-resolve",
		// GTID replication, both ways. ROW events replay exactly what the
		// owner cell wrote; distinct domains keep each server's stream
		// apart, so strict mode can refuse out-of-order GTIDs.
		"--server-id="+strconv.Itoa(s.ID),
		"--gtid-domain-id="+strconv.Itoa(s.ID),
		"--log-bin=binlog",
		"--relay-log=relay-bin",
		"--binlog-format=ROW",
		"--gtid-strict-mode=ON",
		// Replicated transactions stay out of the replica's binlog. Every
		// server replicates from every other directly, so none needs them
		// passed on; and a semi-sync master waits for an acknowledgement of
		// everything it binlogs, so with log_slave_updates a server whose
		// peer died could not even apply what it had received from it,
		// which is what an emergency failover drains.
		"--log-slave-updates=OFF",
		// A replica notices a master that vanished without closing its
		// socket within this many seconds (heartbeats every half of it).
		"--slave-net-timeout=10",
		"--rpl-semi-sync-master-enabled="+onOff(s.MasterSemiSync),
		"--rpl-semi-sync-slave-enabled="+onOff(s.ReplicaSemiSync),
		"--rpl-semi-sync-master-timeout="+strconv.FormatInt(l.st.SemiSyncTimeoutMS, 10),
		"--character-set-server=utf8mb4",
		"--max-connections=1000",
		// Small, so a lab starts in a moment and fits a laptop.
		"--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=32M",
	)
	return append(args, l.st.Options...)
}

// initialize creates a server's data directory with mariadb-install-db. Root gets no password, from loopback
// only: the lab listens on 127.0.0.1.
func (l *Lab) initialize(ctx context.Context, name string) error {
	data := l.dataDir(name)
	if l.install == "" {
		return fmt.Errorf("%w: mariadb-install-db not found", ErrNotInstalled)
	}
	os.RemoveAll(data) // a half-initialized directory from an interrupted start
	args := []string{"--no-defaults"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, "--datadir="+data, "--tmpdir="+l.tmpDir(name), "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=32M")
	began := time.Now()
	cmd := exec.CommandContext(ctx, l.install, args...)
	logPath := filepath.Join(l.serverDir(name), "install.log")
	out, err := cmd.CombinedOutput()
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %s: %s: %v (%s):\n%s", ErrStart, name, filepath.Base(l.install), err, logPath, errorLines(string(out), 15))
	}
	l.log("mysqllab: %s: initialized %s in %v", name, data, time.Since(began).Round(time.Millisecond))
	return nil
}

// errorLines returns the lines of a log that report errors, or its last n
// lines if none does.
func errorLines(s string, n int) string {
	var errs []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "ERROR") {
			errs = append(errs, line)
		}
	}
	if len(errs) == 0 {
		return lastLines(s, n)
	}
	return lastLines(strings.Join(errs, "\n"), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// launch starts a server's process and waits until it answers SQL. With
// pickPorts, a port someone else took since it was picked is replaced by
// another free one (up to 3 tries).
func (l *Lab) launch(ctx context.Context, name string, pickPorts bool) error {
	for attempt := 1; ; attempt++ {
		err := l.launchOnce(ctx, name)
		if err == nil {
			return nil
		}
		if !pickPorts || attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
		l.mu.Lock()
		var taken []int
		for _, s := range l.st.Servers {
			taken = append(taken, s.Port)
		}
		l.mu.Unlock()
		p, perr := freePort(taken)
		if perr != nil {
			return err
		}
		l.log("mysqllab: %s: port taken (%v); trying port %d", name, err, p)
		l.mu.Lock()
		for i := range l.st.Servers {
			if l.st.Servers[i].Name == name {
				l.st.Servers[i].Port = p
			}
		}
		if db := l.dbs[name]; db != nil {
			db.Close()
			delete(l.dbs, name)
		}
		l.mu.Unlock()
	}
}

func (l *Lab) launchOnce(ctx context.Context, name string) error {
	l.mu.Lock()
	s := l.serverLocked(name)
	args := l.serverArgs(s)
	bin, detach := l.st.Mariadbd, l.st.Detach
	l.mu.Unlock()

	if err := os.MkdirAll(l.tmpDir(name), 0o755); err != nil {
		return fmt.Errorf("mysqllab: %s: %w", name, err)
	}
	errLog := l.errorLog(name)
	logStart := fileSize(errLog)
	out, err := os.OpenFile(filepath.Join(l.serverDir(name), "mariadbd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("mysqllab: %s: %w", name, err)
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = l.serverDir(name)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr(detach)
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrStart, name, err)
	}
	p := &proc{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		cmd.Wait() // reap, so a dead server is not a zombie that looks alive
		close(p.exited)
	}()
	l.mu.Lock()
	l.procs[name] = p
	for i := range l.st.Servers {
		if l.st.Servers[i].Name == name {
			l.st.Servers[i].PID = p.pid
		}
	}
	err = l.saveLocked()
	db := l.dbLocked(name)
	l.mu.Unlock()
	if err != nil {
		return err
	}

	// Poll until it answers; a server that exits instead says why in its
	// error log.
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.PingContext(pctx)
		cancel()
		if err == nil {
			l.log("mysqllab: %s: mariadbd pid %d answers on port %d after %v", name, p.pid, s.Port, time.Since(began).Round(time.Millisecond))
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%w: %s: mariadbd exited at start; %s says:\n%s", ErrStart, name, errLog, newLogLines(errLog, logStart, 15))
		case <-ctx.Done():
			syscall.Kill(p.pid, syscall.SIGKILL)
			return fmt.Errorf("%w: %s: mariadbd pid %d did not answer on port %d within the start timeout (%v); %s says:\n%s",
				ErrStart, name, p.pid, s.Port, ctx.Err(), errLog, newLogLines(errLog, logStart, 15))
		case <-time.After(30 * time.Millisecond):
		}
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// newLogLines returns the last n lines written to path after offset.
func newLogLines(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	return lastLines(string(b), n)
}

// configure points every server at every other: one replication
// connection per peer, named after it, using GTIDs (MASTER_USE_GTID =
// slave_pos: resume from what this server applied, which is what a
// replica that is also a master must do), retrying a lost master every
// second.
func (l *Lab) configure(ctx context.Context) error {
	l.mu.Lock()
	servers := slices.Clone(l.st.Servers)
	l.mu.Unlock()
	for _, s := range servers {
		db := l.DB(s.Name)
		for _, peer := range servers {
			if peer.Name == s.Name {
				continue
			}
			conn := quote(peer.Name)
			if _, err := db.ExecContext(ctx, "STOP SLAVE "+conn); err != nil && !isNoConnection(err) {
				return fmt.Errorf("mysqllab: %s: stop replication from %s: %w", s.Name, peer.Name, err)
			}
			stmt := fmt.Sprintf("CHANGE MASTER %s TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", conn, peer.Port)
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("mysqllab: %s: replicate from %s: %w", s.Name, peer.Name, err)
			}
			if _, err := db.ExecContext(ctx, "START SLAVE "+conn); err != nil {
				return fmt.Errorf("mysqllab: %s: start replication from %s: %w", s.Name, peer.Name, err)
			}
		}
	}
	return nil
}

// SetSourceAddr points replica's replication connection from source at
// addr (host:port) instead of source's own port — a fault proxy on the
// replication link, say — and restarts it from where it stopped (GTID
// slave_pos). An empty addr points it back at source directly. The change
// lasts until the lab is started again.
func (l *Lab) SetSourceAddr(ctx context.Context, replica, source, addr string) error {
	if err := l.checkServer(replica); err != nil {
		return err
	}
	if err := l.checkServer(source); err != nil {
		return err
	}
	if replica == source {
		return fmt.Errorf("mysqllab: %s does not replicate from itself", replica)
	}
	host, port := "127.0.0.1", l.server(source).Port
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("mysqllab: source address %q: %w", addr, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 || net.ParseIP(h) == nil {
			return fmt.Errorf("mysqllab: source address %q: want IP:PORT", addr)
		}
		host, port = h, n
	}
	db := l.DB(replica)
	conn := quote(source)
	for _, stmt := range []string{
		"STOP SLAVE " + conn,
		fmt.Sprintf("CHANGE MASTER %s TO MASTER_HOST='%s', MASTER_PORT=%d", conn, host, port),
		"START SLAVE " + conn,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("mysqllab: %s: %s: %w", replica, stmt, err)
		}
	}
	l.log("mysqllab: %s replicates from %s via %s:%d", replica, source, host, port)
	return nil
}

// quote quotes a connection name; names are checked by Validate
// ([a-z0-9-]), so no escaping is needed.
func quote(name string) string { return "'" + name + "'" }

// isNoConnection reports MariaDB's ER_SLAVE_CONNECTION_NOT_EXIST (1617):
// there is no replication connection of that name yet.
func isNoConnection(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1617
}

// WaitReady waits until every server runs and answers, every replication
// connection runs both threads, and semi-sync is in force wherever the lab
// turned it on: each such master reports Rpl_semi_sync_master_status ON
// with every peer connected as a semi-sync replica. It fails at once if a
// server is down (Restart it first).
func (l *Lab) WaitReady(ctx context.Context) error {
	var last string
	for {
		problem, err := l.readiness(ctx)
		if err != nil {
			return err
		}
		if problem == "" {
			return nil
		}
		if problem != last {
			l.log("mysqllab: waiting: %s", problem)
			last = problem
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: replication not ready: %s (%v)", ErrStart, problem, ctx.Err())
		case <-time.After(30 * time.Millisecond):
		}
	}
}

// readiness returns what is not ready yet ("" when all is), or an error
// when it cannot become ready.
func (l *Lab) readiness(ctx context.Context) (string, error) {
	l.mu.Lock()
	servers := slices.Clone(l.st.Servers)
	l.mu.Unlock()
	for _, s := range servers {
		if !l.Running(s.Name) {
			return "", fmt.Errorf("%w: %s", ErrNotRunning, s.Name)
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := mysql.ReadStatus(qctx, l.DB(s.Name))
		cancel()
		if err != nil {
			return fmt.Sprintf("%s: %v", s.Name, err), nil
		}
		for _, peer := range servers {
			if peer.Name == s.Name {
				continue
			}
			i := slices.IndexFunc(st.Replicas, func(r mysql.ReplicaStatus) bool { return r.Connection == peer.Name })
			if i < 0 {
				return fmt.Sprintf("%s: no replication connection from %s", s.Name, peer.Name), nil
			}
			r := st.Replicas[i]
			if e := stoppedError(r); e != "" {
				// Replication stopped on an error does not heal by waiting.
				return "", fmt.Errorf("%w: %s: replication from %s stopped: %s", ErrStart, s.Name, peer.Name, e)
			}
			if !r.Running() {
				return fmt.Sprintf("%s: replication from %s: IO %s, SQL %s %s", s.Name, peer.Name, r.IORunning, yesNo(r.SQLRunning), r.LastIOError), nil
			}
		}
		if s.MasterSemiSync {
			peers := len(servers) - 1
			switch {
			case !st.SemiSync.MasterOn:
				return fmt.Sprintf("%s: semi-sync master status OFF", s.Name), nil
			case st.SemiSync.MasterClients < l.semiSyncPeers(servers, s.Name):
				return fmt.Sprintf("%s: %d of %d peers connected as semi-sync replicas", s.Name, st.SemiSync.MasterClients, peers), nil
			}
		}
		if s.ReplicaSemiSync && !st.SemiSync.ReplicaOn {
			return fmt.Sprintf("%s: semi-sync replica status OFF", s.Name), nil
		}
	}
	return "", nil
}

// semiSyncPeers counts the peers of server that acknowledge as
// semi-sync replicas.
func (l *Lab) semiSyncPeers(servers []serverState, server string) int {
	n := 0
	for _, s := range servers {
		if s.Name != server && s.ReplicaSemiSync {
			n++
		}
	}
	return n
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func (l *Lab) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, s := range l.st.Servers {
		parts = append(parts, fmt.Sprintf("%s=127.0.0.1:%d", s.Name, s.Port))
	}
	mode := "semi-sync"
	if l.st.Async {
		mode = "async"
	}
	return strings.Join(parts, " ") + " (" + mode + ")"
}

// saveLocked writes lab.json atomically.
func (l *Lab) saveLocked() error {
	b, err := json.MarshalIndent(l.st, "", "  ")
	if err != nil {
		return fmt.Errorf("mysqllab: encode %s: %w", StateFile, err)
	}
	tmp := filepath.Join(l.dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("mysqllab: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, StateFile)); err != nil {
		return fmt.Errorf("mysqllab: %w", err)
	}
	return nil
}

// aliveLocked reports whether server's process is alive.
func (l *Lab) aliveLocked(name string) bool {
	p := l.procs[name]
	if p == nil {
		return false
	}
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			// Killed by another process (an attached Lab), it can be a
			// zombie this one has not reaped yet.
		}
	}
	return pidAlive(p.pid, l.dataDir(name))
}

// abort kills what a failed Start started and forgets the lab, keeping the
// files (their logs say what went wrong) so that Start can be retried.
func (l *Lab) abort() {
	for _, name := range l.Servers() {
		l.Kill(name)
	}
	l.mu.Lock()
	for _, db := range l.dbs {
		db.Close()
	}
	l.dbs = map[string]*sql.DB{}
	l.closed = true
	l.mu.Unlock()
	os.Remove(filepath.Join(l.dir, StateFile))
}

// Kill kills server's process with SIGKILL, as a power loss would, and
// waits until it is gone. Killing a server that is down does nothing.
func (l *Lab) Kill(server string) error {
	if err := l.checkServer(server); err != nil {
		return err
	}
	l.mu.Lock()
	p := l.procs[server]
	alive := l.aliveLocked(server)
	l.mu.Unlock()
	if !alive {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("mysqllab: kill %s (pid %d): %w", server, p.pid, err)
	}
	if !waitGone(func() bool { return l.Running(server) }, 10*time.Second) {
		return fmt.Errorf("mysqllab: %s (pid %d) still alive 10s after SIGKILL", server, p.pid)
	}
	l.log("mysqllab: %s: killed pid %d", server, p.pid)
	return l.forget(server)
}

// Stop shuts server down gracefully (SIGTERM) and waits until it has
// exited; after StopTimeout it is killed. Stopping a server that is down
// does nothing.
func (l *Lab) Stop(ctx context.Context, server string) error {
	if err := l.checkServer(server); err != nil {
		return err
	}
	l.mu.Lock()
	p := l.procs[server]
	alive := l.aliveLocked(server)
	timeout := l.stopTO
	l.mu.Unlock()
	if !alive {
		return nil
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	began := time.Now()
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("mysqllab: stop %s (pid %d): %w", server, p.pid, err)
	}
	if !waitGone(func() bool { return l.Running(server) }, timeout) {
		l.log("mysqllab: %s (pid %d) did not stop within %v; killing it", server, p.pid, timeout)
		return l.Kill(server)
	}
	l.log("mysqllab: %s: stopped pid %d in %v", server, p.pid, time.Since(began).Round(time.Millisecond))
	return l.forget(server)
}

// forget records that server is down.
func (l *Lab) forget(server string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.st.Servers {
		if l.st.Servers[i].Name == server {
			l.st.Servers[i].PID = 0
		}
	}
	l.procs[server] = &proc{}
	if l.closed {
		return nil
	}
	return l.saveLocked()
}

// Restart stops server if it runs (gracefully) and starts it again from
// its data, on its port, with its semi-sync settings; it returns once the
// server answers. Its replication connections resume by themselves;
// WaitReady waits for them (and for its peers to reconnect to it).
func (l *Lab) Restart(ctx context.Context, server string) error {
	if err := l.checkServer(server); err != nil {
		return err
	}
	if err := l.Stop(ctx, server); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.startTO)
	defer cancel()
	return l.launch(ctx, server, false)
}

// SetSemiSync turns semi-synchronous replication from server to its peers
// on or off: rpl_semi_sync_master_enabled on server (its peers keep
// acknowledging as semi-sync replicas, which costs nothing when the
// master does not wait). Turning it on also makes sure every peer
// acknowledges (in an Async lab they do not) and waits until the master's
// status is ON with every peer connected. The setting survives Restart.
func (l *Lab) SetSemiSync(ctx context.Context, server string, on bool) error {
	if err := l.checkServer(server); err != nil {
		return err
	}
	if !l.Running(server) {
		return fmt.Errorf("%w: %s", ErrNotRunning, server)
	}
	if on {
		for _, peer := range l.Servers() {
			if peer == server || l.server(peer).ReplicaSemiSync {
				continue
			}
			if !l.Running(peer) {
				return fmt.Errorf("%w: %s (it must acknowledge %s's transactions)", ErrNotRunning, peer, server)
			}
			db := l.DB(peer)
			// An I/O thread reads the setting when it connects, and one that
			// sees it change under it fails ("Failed to run 'after_read_event'
			// hook"): stop them all around the change.
			for _, stmt := range []string{
				"STOP ALL SLAVES",
				"SET GLOBAL rpl_semi_sync_slave_enabled = ON",
				"START ALL SLAVES",
			} {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("mysqllab: %s: %s: %w", peer, stmt, err)
				}
			}
			l.setState(peer, func(s *serverState) { s.ReplicaSemiSync = true })
		}
	}
	stmt := "SET GLOBAL rpl_semi_sync_master_enabled = OFF"
	if on {
		stmt = "SET GLOBAL rpl_semi_sync_master_enabled = ON"
	}
	if _, err := l.DB(server).ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("mysqllab: %s: %s: %w", server, stmt, err)
	}
	if err := l.setState(server, func(s *serverState) { s.MasterSemiSync = on }); err != nil {
		return err
	}
	l.log("mysqllab: %s: semi-sync master %v", server, on)
	if !on {
		return nil
	}
	for {
		st, err := mysql.ReadSemiSync(ctx, l.DB(server))
		if err == nil && st.MasterOn && st.MasterClients >= len(l.Servers())-1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mysqllab: %s: semi-sync not in force (%+v, %v): %w", server, st, err, ctx.Err())
		case <-time.After(30 * time.Millisecond):
		}
	}
}

func (l *Lab) setState(server string, f func(*serverState)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.st.Servers {
		if l.st.Servers[i].Name == server {
			f(&l.st.Servers[i])
		}
	}
	return l.saveLocked()
}

// Status is one server of a lab as Status reads it.
type Status struct {
	Server  string `json:"server"`
	Port    int    `json:"port"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
	// Error says why the replication state could not be read ("" when it
	// was).
	Error string `json:"error,omitempty"`
	// ServerStatus is the replication state (zero when Error is set).
	mysql.ServerStatus
}

// Status reads every server's state: whether it runs, its GTID
// positions, replication threads, lag and semi-sync state. A server that
// is down or does not answer has Error set; Status fails only when ctx
// ends.
func (l *Lab) Status(ctx context.Context) ([]Status, error) {
	names := l.Servers()
	out := make([]Status, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		s := l.server(name)
		out[i] = Status{Server: name, Port: s.Port, PID: l.PID(name), Running: l.Running(name)}
		if !out[i].Running {
			out[i].Error = "not running"
			out[i].PID = 0
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := mysql.ReadStatus(qctx, l.DB(name))
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].ServerStatus = st
		}()
	}
	wg.Wait()
	return out, ctx.Err()
}

// CreateDatabase creates database on the first running server (IF NOT
// EXISTS) and waits until replication has created it on every other
// running server. Create schemas through one server only: a table created
// on two servers at once breaks replication when the second CREATE
// arrives.
func (l *Lab) CreateDatabase(ctx context.Context, database string) error {
	if !validDatabase(database) {
		return fmt.Errorf("mysqllab: database name %q: want letters, digits and '_'", database)
	}
	var running []string
	for _, name := range l.Servers() {
		if l.Running(name) {
			running = append(running, name)
		}
	}
	if len(running) == 0 {
		return fmt.Errorf("%w: no server of the lab runs", ErrNotRunning)
	}
	if _, err := l.DB(running[0]).ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+database+"`"); err != nil {
		return fmt.Errorf("mysqllab: %s: create database %s: %w", running[0], database, err)
	}
	return l.Sync(ctx)
}

func validDatabase(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// Sync waits until every running server has applied everything every
// other running server has written: for each server, its own GTID domain
// at its current @@gtid_binlog_pos, waited for on each peer with
// MASTER_GTID_WAIT. Use it in tests after writing at one server and before
// reading at another.
func (l *Lab) Sync(ctx context.Context) error {
	names := l.Servers()
	for _, src := range names {
		if !l.Running(src) {
			continue
		}
		s := l.server(src)
		var binlog string
		if err := l.DB(src).QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&binlog); err != nil {
			return fmt.Errorf("mysqllab: %s: read @@gtid_binlog_pos: %w", src, err)
		}
		pos, err := mysql.ParsePos(binlog)
		if err != nil {
			return err
		}
		own, ok := pos.Domain(uint32(s.ID))
		if !ok {
			continue // it has written nothing yet
		}
		for _, dst := range names {
			if dst == src || !l.Running(dst) {
				continue
			}
			if err := waitGTID(ctx, l.DB(dst), own.String()); err != nil {
				return fmt.Errorf("mysqllab: %s waiting for %s's %s: %w", dst, src, own, err)
			}
		}
	}
	return nil
}

// waitGTID runs MASTER_GTID_WAIT(pos) on db until it succeeds or ctx
// ends; a replication connection stopped by an error ends it at once.
func waitGTID(ctx context.Context, db *sql.DB, pos string) error {
	for {
		if rerr := replicationError(ctx, db); rerr != "" {
			return errors.New("replication stopped: " + rerr)
		}
		var res sql.NullInt64
		err := db.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 1)", pos).Scan(&res)
		if err != nil {
			return err
		}
		if res.Valid && res.Int64 == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// replicationError returns the first SQL-thread error of db's replication
// connections, or "".
func replicationError(ctx context.Context, db *sql.DB) string {
	rs, err := mysql.ReadReplicas(ctx, db)
	if err != nil {
		return ""
	}
	for _, r := range rs {
		if e := stoppedError(r); e != "" {
			return fmt.Sprintf("from %s: %s", r.Connection, e)
		}
	}
	return ""
}

// stoppedError returns the error a replication thread stopped on, or "".
// An I/O thread that fails to connect keeps retrying ("Connecting"): only
// one that gave up ("No") counts.
func stoppedError(r mysql.ReplicaStatus) string {
	switch {
	case r.LastSQLError != "":
		return "SQL thread: " + r.LastSQLError
	case r.IORunning == "No" && r.LastIOError != "":
		return "I/O thread: " + r.LastIOError
	}
	return ""
}

// StopAll stops every server gracefully, in parallel, and keeps the lab's
// files: Attach and Restart (or cellctl lab up) bring it back.
func (l *Lab) StopAll(ctx context.Context) error {
	names := l.Servers()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Stop(ctx, name)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Release closes the lab's connections and leaves its servers running, for
// a process that started a detached lab (Config.Detach) and exits; Attach
// finds the lab again. Close after Release does nothing.
func (l *Lab) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	var errs []error
	for _, db := range l.dbs {
		errs = append(errs, db.Close())
	}
	l.dbs = map[string]*sql.DB{}
	return errors.Join(errs...)
}

// Close stops every server and closes the lab's connections; unless the
// lab keeps its data (Config.KeepData), it then removes what the lab put
// in its directory (lab.json and the servers' directories; the directory
// itself if that leaves it empty). Calling it again returns the first
// call's result.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		err := l.closeErr
		l.mu.Unlock()
		return err
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.stopTO+10*time.Second)
	defer cancel()
	err := l.StopAll(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, db := range l.dbs {
		db.Close()
	}
	l.dbs = map[string]*sql.DB{}
	if err == nil && !l.st.KeepData {
		err = l.removeLocked()
	}
	l.closeErr = err
	return err
}

// removeLocked removes the lab's files.
func (l *Lab) removeLocked() error {
	var errs []error
	for _, s := range l.st.Servers {
		errs = append(errs, os.RemoveAll(l.serverDir(s.Name)))
		if !strings.HasPrefix(s.Socket, l.dir+string(filepath.Separator)) {
			if err := os.Remove(s.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := os.Remove(filepath.Join(l.dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err) // gone already when another Lab closed it
	}
	os.Remove(l.dir) // only if empty: the directory may hold other things
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mysqllab: remove %s: %w", l.dir, err)
	}
	return nil
}
