package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/sqldb"
)

// Name is the mover's name in cutover records and progress.
const Name = "mysql-gtid"

// Defaults of Config.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultSourceTimeout = 5 * time.Second
)

// Errors.
var (
	// ErrInvalidConfig is returned by Validate and New.
	ErrInvalidConfig = errors.New("mysql: invalid config")
	// ErrUnknownCell is returned for a movement naming a cell the config
	// does not have.
	ErrUnknownCell = errors.New("mysql: unknown cell")
	// ErrLagging means the target had not applied the source's writes in
	// time (a *LagError says how far it got): the stage must not flip.
	ErrLagging = errors.New("mysql: target lags behind source")
	// ErrSemiSyncOff means RequireSemiSync is set and semi-synchronous
	// replication is not in force (a *SemiSyncError says where).
	ErrSemiSyncOff = errors.New("mysql: semi-sync replication is off")
	// ErrSourceUnreachable means the source server did not answer (an
	// *UnreachableError says which); without DrainIfSourceDown the mover
	// cannot show the target has its writes.
	ErrSourceUnreachable = errors.New("mysql: source server unreachable")
)

// Cell is where one cell keeps its books.
type Cell struct {
	// Server names the MariaDB server the cell's database lives on; cells
	// with the same Server share it and moves between them need no wait.
	// Default: the host:port of DSN. Required with DB.
	Server string
	// DSN is the cell's database in infra/sqldb form,
	// mysql://USER[:PASS]@HOST:PORT/DB. The mover opens its own
	// connections to the server from it, without the database and without
	// session variables: it asks the server about replication only, which
	// needs the REPLICATION CLIENT (or SLAVE MONITOR) privilege.
	DSN string
	// DB is an open pool to the cell's server, instead of DSN. The mover
	// does not close it.
	DB *sql.DB
	// Connection is the name of the replication connection, on the other
	// servers, that replicates from this cell's server (MariaDB
	// multi-source). Default: the connection whose master address is the
	// DSN's host:port.
	Connection string
}

// Config says where each cell's books are and what the gate demands.
type Config struct {
	// Cells maps every cell the mover may see in a movement to its
	// database. Required.
	Cells map[string]Cell
	// RequireSemiSync makes the gate refuse (ErrSemiSyncOff) unless
	// semi-synchronous replication is in force from source to target: on
	// the source as master, rpl_semi_sync_master_enabled and
	// Rpl_semi_sync_master_status ON; on the target as replica,
	// rpl_semi_sync_slave_enabled and Rpl_semi_sync_slave_status ON. Set
	// it where the cluster promises RPO 0 for acknowledged writes.
	// Default false.
	RequireSemiSync bool
	// Timeout bounds one wait of a target for a source's position
	// (MASTER_GTID_WAIT), within the context's deadline. Default
	// DefaultTimeout (30s).
	Timeout time.Duration
	// SourceTimeout is how long the source has to answer before it counts
	// as unreachable. Default DefaultSourceTimeout (5s).
	SourceTimeout time.Duration
	// DrainIfSourceDown lets the gate pass when the source server is
	// unreachable (an emergency failover: its IDC is lost) once the target
	// has applied everything it received from the source (its Gtid_IO_Pos
	// for that connection). With semi-sync that is every acknowledged
	// write; without it, writes the source acknowledged but never sent are
	// lost, and the description names the position drained. Default
	// false: an unreachable source fails the gate.
	DrainIfSourceDown bool
	// OnSever, if set, is called when a drain has severed the lost source
	// of the cells from (see WaitData): from then on nothing their server
	// still holds can reach the target.
	OnSever func(from []string, at time.Time)
}

// Validate checks the fields and how they fit together.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(c.Cells) == 0 {
		return bad("Cells is empty")
	}
	for _, id := range sortedKeys(c.Cells) {
		cell := c.Cells[id]
		switch {
		case id == "":
			return bad("a cell with an empty ID")
		case cell.DSN == "" && cell.DB == nil:
			return bad("cell %s: DSN or DB is required", id)
		case cell.DSN != "" && cell.DB != nil:
			return bad("cell %s: DSN and DB are exclusive", id)
		case cell.DB != nil && cell.Server == "":
			return bad("cell %s: Server is required with DB (the mover cannot tell which cells share a server)", id)
		}
		if cell.DSN != "" {
			d, err := sqldb.ParseDSN(cell.DSN)
			if err != nil {
				return bad("cell %s: %v", id, err)
			}
			if d.Dialect != sqldb.MySQL {
				return bad("cell %s: DSN %s is not a MySQL/MariaDB DSN", id, d)
			}
		}
	}
	if c.Timeout < 0 {
		return bad("Timeout %v is negative", c.Timeout)
	}
	if c.SourceTimeout < 0 {
		return bad("SourceTimeout %v is negative", c.SourceTimeout)
	}
	return nil
}

// LagError says how far a target got while the gate waited.
type LagError struct {
	// Source and Target are the cells ("a1", "b1"; comma-separated when a
	// pair of servers carries several).
	Source, Target string
	// SourceServer and TargetServer are their servers.
	SourceServer, TargetServer string
	// SourcePos is what the target had to reach: the source's
	// @@gtid_binlog_pos (or, when the source was down, what the target had
	// received from it), less the domains the target already had.
	SourcePos string
	// TargetPos is the target's @@gtid_current_pos when the wait gave up.
	TargetPos string
	// Waited is how long the target was waited for.
	Waited time.Duration
	// SourceDown is set when the wait was a drain of an unreachable
	// source.
	SourceDown bool
	// TargetReplication summarizes the target's replication connections
	// when the wait gave up ("from idc-a: IO Yes, SQL No"), often the
	// reason it lags.
	TargetReplication string
}

func (e *LagError) Error() string {
	what := "GTID"
	if e.SourceDown {
		what = "received GTID"
	}
	msg := fmt.Sprintf("mysql: %s (%s) has not applied %s's (%s) %s %s within %v: it is at %s",
		e.Target, e.TargetServer, e.Source, e.SourceServer, what, e.SourcePos, e.Waited.Round(time.Millisecond), orNone(e.TargetPos))
	if e.TargetReplication != "" {
		msg += "; replication " + e.TargetReplication
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrLagging) hold.
func (e *LagError) Unwrap() error { return ErrLagging }

// SemiSyncError says where semi-sync replication is off.
type SemiSyncError struct {
	Cell   string
	Server string
	// Role is "source" (the server as master) or "target" (as replica).
	Role string
	// Off says what is off: "rpl_semi_sync_master_enabled" (configured
	// off), "Rpl_semi_sync_master_status" (fell back to asynchronous),
	// "rpl_semi_sync_slave_enabled" or "Rpl_semi_sync_slave_status".
	Off string
}

func (e *SemiSyncError) Error() string {
	return fmt.Sprintf("mysql: semi-sync replication is off on %s %s (%s): %s is OFF", e.Role, e.Cell, e.Server, e.Off)
}

// Unwrap makes errors.Is(err, ErrSemiSyncOff) hold.
func (e *SemiSyncError) Unwrap() error { return ErrSemiSyncOff }

// UnreachableError is a source server that did not answer.
type UnreachableError struct {
	Cell   string
	Server string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("mysql: source %s (%s) unreachable: %v", e.Cell, e.Server, e.Err)
}

// Is makes errors.Is(err, ErrSourceUnreachable) hold.
func (e *UnreachableError) Is(target error) bool { return target == ErrSourceUnreachable }

// Unwrap returns the connection error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Mover is the mysql-gtid DataMover. It is safe for concurrent use.
type Mover struct {
	cfg   Config
	cells map[string]cellRef
	owned []*sql.DB // pools the mover opened, closed by Close
}

type cellRef struct {
	server string
	addr   string // host:port, "" when given a DB
	conn   string // replication connection name on peers, if known
	db     *sql.DB
}

var _ failover.DataMover = (*Mover)(nil)

// New checks cfg and returns a mover. It connects lazily: a server that is
// down now is not an error until a gate needs it.
func New(cfg Config) (*Mover, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.SourceTimeout == 0 {
		cfg.SourceTimeout = DefaultSourceTimeout
	}
	m := &Mover{cfg: cfg, cells: map[string]cellRef{}}
	pools := map[string]*sql.DB{} // by server
	for _, id := range sortedKeys(cfg.Cells) {
		c := cfg.Cells[id]
		if c.DB != nil {
			m.cells[id] = cellRef{server: c.Server, db: c.DB, conn: c.Connection}
			continue
		}
		d, _ := sqldb.ParseDSN(c.DSN) // checked by Validate
		server := c.Server
		if server == "" {
			server = d.MySQL.Addr
		}
		db := pools[server]
		if db == nil {
			mc := d.MySQL.Clone()
			mc.DBName = ""  // server-level statements only
			mc.Params = nil // no session variables to set (or to be unknown)
			conn, err := gomysql.NewConnector(mc)
			if err != nil {
				m.Close()
				return nil, fmt.Errorf("%w: cell %s: %v", ErrInvalidConfig, id, err)
			}
			db = sql.OpenDB(conn)
			db.SetMaxIdleConns(2)
			db.SetConnMaxIdleTime(time.Minute)
			pools[server] = db
			m.owned = append(m.owned, db)
		}
		m.cells[id] = cellRef{server: server, addr: d.MySQL.Addr, db: db, conn: c.Connection}
	}
	return m, nil
}

// Close closes the connections the mover opened.
func (m *Mover) Close() error {
	var errs []error
	for _, db := range m.owned {
		errs = append(errs, db.Close())
	}
	m.owned = nil
	return errors.Join(errs...)
}

// Name is "mysql-gtid".
func (m *Mover) Name() string { return Name }

// pair is one source server and one target server of a movement, with the
// cells that move between them.
type pair struct {
	src, dst     cellRef
	from, to     []string
	srcID, dstID string // first cells, for errors
}

// WaitData returns once every target server of mv holds every write its
// source server had made when WaitData began: for each distinct (source,
// target) server pair it reads the source's @@gtid_binlog_pos and waits
// with MASTER_GTID_WAIT until the target has applied it. The runner calls
// it after the barrier, so no cell writes the moving slots any more and
// that position includes their last write. Pairs on one server pass at
// once. The description says what was waited for, per pair.
func (m *Mover) WaitData(ctx context.Context, cutover string, mv failover.Movement) (string, error) {
	pairs, err := m.pairs(mv)
	if err != nil {
		return "", err
	}
	if len(pairs) == 0 {
		return "nothing moves between servers", nil
	}
	var descs []string
	for _, p := range pairs {
		d, err := m.waitPair(ctx, p)
		if err != nil {
			return "", err
		}
		descs = append(descs, d)
	}
	return strings.Join(descs, "; "), nil
}

// pairs groups mv's moves by (source server, target server), in a stable
// order.
func (m *Mover) pairs(mv failover.Movement) ([]*pair, error) {
	byKey := map[[2]string]*pair{}
	var order [][2]string
	add := func(from, to string) error {
		if from == "" || from == to {
			return nil // unowned slots: no writes to carry
		}
		src, ok := m.cells[from]
		if !ok {
			return fmt.Errorf("%w %q: the mysql-gtid mover has no database for it", ErrUnknownCell, from)
		}
		dst, ok := m.cells[to]
		if !ok {
			return fmt.Errorf("%w %q: the mysql-gtid mover has no database for it", ErrUnknownCell, to)
		}
		k := [2]string{src.server, dst.server}
		p := byKey[k]
		if p == nil {
			p = &pair{src: src, dst: dst, srcID: from, dstID: to}
			byKey[k] = p
			order = append(order, k)
		}
		if !slices.Contains(p.from, from) {
			p.from = append(p.from, from)
		}
		if !slices.Contains(p.to, to) {
			p.to = append(p.to, to)
		}
		return nil
	}
	for _, s := range mv.Slots {
		if err := add(s.From, s.To); err != nil {
			return nil, err
		}
	}
	for _, k := range mv.Keys {
		if err := add(k.From, k.To); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(order, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	out := make([]*pair, len(order))
	for i, k := range order {
		p := byKey[k]
		slices.Sort(p.from)
		slices.Sort(p.to)
		out[i] = p
	}
	return out, nil
}

func (p *pair) fromCells() string { return strings.Join(p.from, ",") }
func (p *pair) toCells() string   { return strings.Join(p.to, ",") }

func (m *Mover) waitPair(ctx context.Context, p *pair) (string, error) {
	if p.src.server == p.dst.server {
		return fmt.Sprintf("%s -> %s: same server %s, nothing to wait for", p.fromCells(), p.toCells(), p.src.server), nil
	}
	if m.cfg.RequireSemiSync {
		if err := m.checkSource(ctx, p); err != nil {
			return m.sourceFailed(ctx, p, err)
		}
		if err := m.checkTarget(ctx, p, false); err != nil {
			return "", err
		}
	}
	// @@gtid_binlog_pos, not @@gtid_current_pos or @@gtid_slave_pos: the
	// binary log holds every transaction the source committed, its own
	// writes included (a transaction is in the binlog before its commit
	// returns), so this position covers every write the source's cells
	// made. @@gtid_slave_pos holds only what the source replicated from
	// others, and @@gtid_current_pos can mix in a replicated position for
	// a domain whose binlog is older.
	var raw string
	sctx, cancel := context.WithTimeout(ctx, m.cfg.SourceTimeout)
	err := p.src.db.QueryRowContext(sctx, "SELECT @@gtid_binlog_pos").Scan(&raw)
	cancel()
	if err != nil {
		return m.sourceFailed(ctx, p, err)
	}
	srcPos, err := ParsePos(raw)
	if err != nil {
		return "", fmt.Errorf("mysql: source %s (%s): %w", p.srcID, p.src.server, err)
	}
	return m.wait(ctx, p, srcPos, false)
}

// sourceFailed handles a source that did not answer: drain, or fail.
func (m *Mover) sourceFailed(ctx context.Context, p *pair, err error) (string, error) {
	if ctx.Err() != nil {
		return "", fmt.Errorf("mysql: source %s (%s): %w", p.srcID, p.src.server, ctx.Err())
	}
	var se *SemiSyncError
	if errors.As(err, &se) || !unreachable(err) {
		return "", err
	}
	ue := &UnreachableError{Cell: p.srcID, Server: p.src.server, Err: err}
	if !m.cfg.DrainIfSourceDown {
		return "", ue
	}
	return m.drain(ctx, p, ue)
}

// drain waits until the target has applied everything it received from
// the unreachable source.
func (m *Mover) drain(ctx context.Context, p *pair, ue *UnreachableError) (string, error) {
	if m.cfg.RequireSemiSync {
		// The replica's status is OFF while its master is gone; only the
		// setting can be checked, and the source's not at all.
		if err := m.checkTarget(ctx, p, true); err != nil {
			return "", err
		}
	}
	replicas, err := ReadReplicas(ctx, p.dst.db)
	if err != nil {
		return "", fmt.Errorf("mysql: target %s (%s): %w", p.dstID, p.dst.server, err)
	}
	// The connection from the source: by name if known, else by the
	// address the mover knows; otherwise every connection (what the
	// target received from anyone, which includes the source's writes).
	var chosen []ReplicaStatus
	for _, r := range replicas {
		if p.src.conn != "" && r.Connection == p.src.conn ||
			p.src.conn == "" && p.src.addr != "" && net.JoinHostPort(r.MasterHost, strconv.Itoa(r.MasterPort)) == p.src.addr {
			chosen = append(chosen, r)
		}
	}
	if len(chosen) == 0 && p.src.conn == "" {
		chosen = replicas
	}
	if len(chosen) == 0 {
		return "", fmt.Errorf("mysql: target %s (%s) has no replication connection from the lost source %s: it cannot have its writes: %w", p.dstID, p.dst.server, p.src.server, ue)
	}
	var received Pos
	var conns []string
	for _, r := range chosen {
		pos, err := ParsePos(r.IOPos)
		if err != nil {
			return "", fmt.Errorf("mysql: target %s (%s) connection %q: %w", p.dstID, p.dst.server, r.Connection, err)
		}
		received = received.Max(pos)
		conns = append(conns, fmt.Sprintf("%q", r.Connection))
	}
	desc, err := m.wait(ctx, p, received, true)
	if err != nil {
		return "", err
	}
	// Then sever the lost source: stop the target receiving from it, so
	// that nothing the old master still has (transactions it wrote but
	// never got acknowledged — it may be alive behind a partition) can
	// reach the target after the flip, when the target's cells own its
	// slots. Only the I/O thread stops: the SQL thread keeps applying (with
	// GTID, MariaDB discards the relay log of a connection whose threads
	// are both stopped). What arrived meanwhile is drained too. Bringing
	// the old master back is a DBA's job: it may hold transactions the
	// target never saw.
	for _, r := range chosen {
		stmt := "STOP SLAVE " + quoteConn(r.Connection) + " IO_THREAD"
		if _, err := p.dst.db.ExecContext(ctx, stmt); err != nil {
			return "", fmt.Errorf("mysql: target %s (%s): sever the lost source: %s: %w", p.dstID, p.dst.server, stmt, err)
		}
	}
	if m.cfg.OnSever != nil {
		m.cfg.OnSever(p.from, time.Now())
	}
	if replicas, err = ReadReplicas(ctx, p.dst.db); err != nil {
		return "", fmt.Errorf("mysql: target %s (%s): %w", p.dstID, p.dst.server, err)
	}
	after := received
	for _, r := range replicas {
		for _, c := range chosen {
			if c.Connection == r.Connection {
				if pos, err := ParsePos(r.IOPos); err == nil {
					after = after.Max(pos)
				}
			}
		}
	}
	if !received.Covers(after) {
		if desc, err = m.wait(ctx, p, after, true); err != nil {
			return "", err
		}
	}
	semi := ""
	if m.cfg.RequireSemiSync {
		semi = "; semi-sync could not be confirmed on the unreachable source"
	}
	return fmt.Sprintf("source %s (%s) unreachable (%v); severed and drained replication connection %s: %s%s",
		p.fromCells(), p.src.server, ue.Err, strings.Join(conns, ","), desc, semi), nil
}

// wait waits until the target has applied pos (less what it already has).
func (m *Mover) wait(ctx context.Context, p *pair, pos Pos, sourceDown bool) (string, error) {
	began := time.Now()
	what := "GTID"
	if sourceDown {
		what = "received GTID"
	}
	targetPos, err := m.targetPos(ctx, p)
	if err != nil {
		return "", err
	}
	// MASTER_GTID_WAIT compares with @@gtid_slave_pos, which lacks the
	// target's own writes (its own domain) unless they came back around the
	// replication ring: leave out what the target already has.
	need := pos.Minus(targetPos)
	if len(need) == 0 {
		return fmt.Sprintf("%s (%s) already had %s's %s %s", p.toCells(), p.dst.server, p.fromCells(), what, orNone(pos.String())), nil
	}
	timeout := m.cfg.Timeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return "", fmt.Errorf("mysql: wait for %s (%s): %w", p.dstID, p.dst.server, context.DeadlineExceeded)
	}
	// The server times the wait; the context only guards against a server
	// that stops answering.
	qctx, cancel := context.WithTimeout(ctx, timeout+m.cfg.SourceTimeout)
	defer cancel()
	var res sql.NullInt64
	err = p.dst.db.QueryRowContext(qctx, "SELECT MASTER_GTID_WAIT(?, ?)", need.String(), timeout.Seconds()).Scan(&res)
	waited := time.Since(began)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return "", fmt.Errorf("mysql: wait for %s (%s) to reach %s: %w", p.dstID, p.dst.server, need, ctx.Err())
		}
		return "", fmt.Errorf("mysql: target %s (%s): MASTER_GTID_WAIT(%s): %w", p.dstID, p.dst.server, need, err)
	case res.Valid && res.Int64 == 0:
		return fmt.Sprintf("%s (%s) reached %s's %s %s in %v", p.toCells(), p.dst.server, p.fromCells(), what, need, waited.Round(time.Millisecond)), nil
	case res.Valid && res.Int64 == -1:
		// Say where the target got and why, within a short bound of its
		// own: ctx may be nearly spent.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.SourceTimeout)
		defer rcancel()
		now, _ := m.targetPos(rctx, p)
		return "", &LagError{
			Source: p.fromCells(), Target: p.toCells(),
			SourceServer: p.src.server, TargetServer: p.dst.server,
			SourcePos: need.String(), TargetPos: now.String(), Waited: waited, SourceDown: sourceDown,
			TargetReplication: replicationSummary(rctx, p.dst.db),
		}
	}
	return "", fmt.Errorf("mysql: target %s (%s): MASTER_GTID_WAIT(%s) returned %v (the wait was killed, or the target is not a replica)", p.dstID, p.dst.server, need, nullString(res))
}

func (m *Mover) targetPos(ctx context.Context, p *pair) (Pos, error) {
	var raw string
	if err := p.dst.db.QueryRowContext(ctx, "SELECT @@gtid_current_pos").Scan(&raw); err != nil {
		return nil, fmt.Errorf("mysql: target %s (%s): read @@gtid_current_pos: %w", p.dstID, p.dst.server, err)
	}
	pos, err := ParsePos(raw)
	if err != nil {
		return nil, fmt.Errorf("mysql: target %s (%s): %w", p.dstID, p.dst.server, err)
	}
	return pos, nil
}

// checkSource checks semi-sync is configured and in force on the source
// as master.
func (m *Mover) checkSource(ctx context.Context, p *pair) error {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.SourceTimeout)
	defer cancel()
	s, err := ReadSemiSync(sctx, p.src.db)
	if err != nil {
		return err
	}
	off := ""
	switch {
	case !s.MasterEnabled:
		off = "rpl_semi_sync_master_enabled"
	case !s.MasterOn:
		off = "Rpl_semi_sync_master_status"
	}
	if off != "" {
		return &SemiSyncError{Cell: p.fromCells(), Server: p.src.server, Role: "source", Off: off}
	}
	return nil
}

// checkTarget checks semi-sync on the target as replica; with
// settingOnly, only that it is configured.
func (m *Mover) checkTarget(ctx context.Context, p *pair, settingOnly bool) error {
	s, err := ReadSemiSync(ctx, p.dst.db)
	if err != nil {
		return fmt.Errorf("mysql: target %s (%s): %w", p.dstID, p.dst.server, err)
	}
	off := ""
	switch {
	case !s.ReplicaEnabled:
		off = "rpl_semi_sync_slave_enabled"
	case !s.ReplicaOn && !settingOnly:
		off = "Rpl_semi_sync_slave_status"
	}
	if off != "" {
		return &SemiSyncError{Cell: p.toCells(), Server: p.dst.server, Role: "target", Off: off}
	}
	return nil
}

// unreachable reports whether err means the server did not answer, as
// opposed to answering with an error (a *MySQLError: bad credentials,
// missing privileges), which no drain should paper over.
func unreachable(err error) bool {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, gomysql.ErrInvalidConn) ||
		errors.Is(err, driver.ErrBadConn) ||
		strings.Contains(err.Error(), "connection refused")
}

// replicationSummary describes db's replication connections in a line,
// or "" if they cannot be read.
func replicationSummary(ctx context.Context, db *sql.DB) string {
	rs, err := ReadReplicas(ctx, db)
	if err != nil {
		return ""
	}
	if len(rs) == 0 {
		return "none: the target replicates from no one"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		sqlRunning := "No"
		if r.SQLRunning {
			sqlRunning = "Yes"
		}
		parts[i] = fmt.Sprintf("from %s: IO %s, SQL %s", orNone(r.Connection), r.IORunning, sqlRunning)
		if r.SecondsBehind != nil {
			parts[i] += fmt.Sprintf(", %ds behind", *r.SecondsBehind)
		}
		if e := r.LastSQLError; e != "" {
			parts[i] += ", SQL error: " + e
		} else if e := r.LastIOError; e != "" && r.IORunning != "Yes" {
			parts[i] += ", IO error: " + e
		}
	}
	return strings.Join(parts, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func nullString(n sql.NullInt64) string {
	if !n.Valid {
		return "NULL"
	}
	return strconv.FormatInt(n.Int64, 10)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quoteConn quotes a replication connection name for STOP SLAVE.
func quoteConn(name string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(name, `\`, `\\`), "'", "''") + "'"
}
