package lab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/chaos/netfault"
	"github.com/cellkit/cellkit/chaos/reqfault"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/lab/books"
	"github.com/cellkit/cellkit/lab/load"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// Movers a lab can run cutovers with.
const (
	MoverCopy = "copy"       // copy rows between the cells' own databases
	MoverGTID = "mysql-gtid" // wait for MariaDB replication between IDCs
	MoverNone = "none"       // stateless: nothing moves (wrong for paycell; for experiments)
)

// Config configures a Lab. Zero values mean the defaults.
type Config struct {
	// Dir holds etcd's data and the SQLite books. Required; the lab does
	// not remove it.
	Dir string
	// Cluster is the etcd key prefix's cluster name. Default "lab".
	Cluster string
	// Cells are the map's cells. Default a1, a2 in IDC-A and b1, b2 in
	// IDC-B, each owning a contiguous quarter of the slots.
	Cells []router.Cell
	// SlotCount is the map's slot count. Default router.DefaultSlotCount.
	SlotCount int
	// DSN returns a cell's database. Default "sqlite:<Dir>/<cell>.db".
	// Cells given the same DSN share one database (mysql-gtid: one
	// server per IDC, replicating to the other IDC).
	DSN func(cell string) string
	// Replicated says the databases replicate to each other (mysql-gtid),
	// for the book checks.
	Replicated bool
	// Mover is the data mover of cutovers: MoverCopy (default),
	// MoverGTID or MoverNone.
	Mover string
	// RequireSemiSync makes the mysql-gtid mover refuse to flip unless
	// semi-synchronous replication is on. Default false.
	RequireSemiSync bool
	// LeaseTTL is every guard instance's lease. Default 2s (with a
	// 500ms fencing margin), etcdcell.Local.
	LeaseTTL time.Duration
	// BankDelay is how long the virtual bank takes to answer an
	// operation. Default 20ms.
	BankDelay time.Duration
	// SettleEvery is how often each cell settles its merchants. Default 1s.
	SettleEvery time.Duration
	// EtcdMembers is the size of the lab's embedded etcd: 1 (default) or
	// 3 (drills stop the leader or lose a member).
	EtcdMembers int
	// Faults wires the lab's network paths through fault proxies
	// (chaos/netfault, Lab.Net) so drills can cut them: each IDC's cells
	// to etcd, the router to each cell, each IDC's cells to their
	// database server, the replication link between the servers (MariaDB),
	// the controller (cutovers) to etcd and to each server, and the
	// clients to the router. See lab/faults.go for the proxies' names.
	Faults bool
	// MariaDB is the lab's MariaDB servers when the databases live there,
	// one server per IDC named like the IDC in lower case: drills kill
	// and stop them, and with Faults the replication links go through
	// proxies. Nil for SQLite.
	MariaDB *mysqllab.Lab
	// Logger receives the components' logs. Default discards.
	Logger *slog.Logger
}

// DefaultCells are the lab's two IDCs of two cells each.
func DefaultCells() []router.Cell {
	return []router.Cell{
		{ID: "a1", IDC: "IDC-A", State: router.StateActive},
		{ID: "a2", IDC: "IDC-A", State: router.StateActive},
		{ID: "b1", IDC: "IDC-B", State: router.StateActive},
		{ID: "b2", IDC: "IDC-B", State: router.StateActive},
	}
}

func (c *Config) setDefaults() {
	if c.Cluster == "" {
		c.Cluster = "lab"
	}
	if len(c.Cells) == 0 {
		c.Cells = DefaultCells()
	}
	if c.SlotCount == 0 {
		c.SlotCount = router.DefaultSlotCount
	}
	if c.DSN == nil {
		dir := c.Dir
		c.DSN = func(cell string) string { return "sqlite:" + filepath.Join(dir, cell+".db") }
	}
	if c.Mover == "" {
		c.Mover = MoverCopy
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 2 * time.Second
	}
	if c.BankDelay == 0 {
		c.BankDelay = 20 * time.Millisecond
	}
	if c.SettleEvery == 0 {
		c.SettleEvery = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.EtcdMembers == 0 {
		c.EtcdMembers = 1
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	c.setDefaults()
	if c.Dir == "" {
		return errors.New("lab: Dir is required")
	}
	if err := router.CheckSlotCount(c.SlotCount); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	switch c.Mover {
	case MoverCopy, MoverGTID, MoverNone:
	default:
		return fmt.Errorf("lab: mover %q (want %s, %s or %s)", c.Mover, MoverCopy, MoverGTID, MoverNone)
	}
	if c.EtcdMembers != 1 && c.EtcdMembers != 3 {
		return fmt.Errorf("lab: EtcdMembers %d (want 1 or 3)", c.EtcdMembers)
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("lab: LeaseTTL %v is under 1s", c.LeaseTTL)
	}
	seen := map[string]bool{}
	for _, cl := range c.Cells {
		if err := cl.Check(); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		if seen[cl.ID] {
			return fmt.Errorf("lab: cell %s twice", cl.ID)
		}
		seen[cl.ID] = true
	}
	return nil
}

// database is one database and the cells keeping their books in it.
type database struct {
	dsn     string
	db      *sql.DB
	dialect sqldb.Dialect
	cells   []string
}

// Lab is a running platform.
type Lab struct {
	cfg Config

	// Etcd is the embedded etcd of a one-member lab; EtcdCluster the
	// members of a three-member one (the other is nil).
	Etcd        *etcdembed.Server
	EtcdCluster *etcdembed.Cluster
	// Client is the lab's own etcd client (the router's and the checks'),
	// never cut by a fault.
	Client *clientv3.Client
	// Net holds the fault proxies (Config.Faults); nil without.
	Net   *netfault.Net
	Store *etcdstore.Store
	// Admissions collects every guard's admission records.
	Admissions *admission.Log
	// RouterURL is cellrouter's HTTP base URL.
	RouterURL string

	dbs        []*database
	dbOf       map[string]*database
	cells      map[string]*Cell
	idcOf      map[string]string
	cellAddr   map[string]string
	gw         *gateway.Gateway
	routerAddr string // the gateway's own listen address
	stopRouter func(crash bool)
	bank       *bankHandle
	closers    []func()
	mu         sync.Mutex
	lost       map[*database]bool
	cellDBs    map[string]*sql.DB // per IDC, through the db proxy (MariaDB + Faults)
	ctlDBs     map[*database]*sql.DB
	severed    map[string]time.Time // cell -> when its lost database was severed
}

// Start starts etcd, creates the map, opens and migrates every database,
// starts a cell instance per cell, the bank and cellrouter, and returns
// once the router is ready.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l = &Lab{cfg: cfg, Admissions: &admission.Log{}, dbOf: map[string]*database{}, cells: map[string]*Cell{},
		idcOf: map[string]string{}, cellAddr: map[string]string{}, lost: map[*database]bool{}, cellDBs: map[string]*sql.DB{}, ctlDBs: map[*database]*sql.DB{}, severed: map[string]time.Time{}}
	for _, c := range cfg.Cells {
		l.idcOf[c.ID] = c.IDC
	}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if cfg.Faults {
		l.Net = netfault.New(cfg.Logger)
		l.closers = append(l.closers, l.Net.Close)
	}
	if cfg.EtcdMembers == 1 {
		if l.Etcd, err = etcdembed.Start(ctx, etcdembed.DefaultConfig(filepath.Join(cfg.Dir, "etcd"))); err != nil {
			return nil, err
		}
		l.closers = append(l.closers, func() { l.Etcd.Close() })
	} else {
		if l.EtcdCluster, err = etcdembed.StartCluster(ctx, etcdembed.ClusterConfig{Dir: filepath.Join(cfg.Dir, "etcd"), Members: cfg.EtcdMembers}); err != nil {
			return nil, err
		}
		l.closers = append(l.closers, func() { l.EtcdCluster.Close() })
	}
	if l.Client, err = etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: l.EtcdEndpoints(), DialTimeout: 5 * time.Second}); err != nil {
		return nil, err
	}
	l.closers = append(l.closers, func() { l.Client.Close() })
	if l.Store, err = etcdstore.New(l.Client, etcdstore.Config{Cluster: cfg.Cluster, Actor: "lab"}); err != nil {
		return nil, err
	}
	if err := l.createMap(ctx); err != nil {
		return nil, err
	}
	if err := l.openDatabases(ctx); err != nil {
		return nil, err
	}
	if l.Net != nil {
		// The controller's handles on the databases are opened now, while
		// every server answers: a drill's failover finds them cut or dead.
		for _, d := range l.dbs {
			if _, err := l.controllerDB(ctx, d); err != nil {
				return nil, err
			}
		}
	}
	if err := l.wireRouter(); err != nil {
		return nil, err
	}
	if err := l.wireReplication(ctx); err != nil {
		return nil, err
	}
	if err := l.startBank(ctx); err != nil {
		return nil, err
	}
	for _, c := range cfg.Cells {
		if _, err := l.StartCell(ctx, c.ID); err != nil {
			return nil, err
		}
	}
	if err := l.StartRouter(ctx); err != nil {
		return nil, err
	}
	l.closers = append(l.closers, func() { l.StopRouter(false) })
	return l, nil
}

// EtcdEndpoints are the client URLs of every etcd member.
func (l *Lab) EtcdEndpoints() []string {
	if l.EtcdCluster != nil {
		return l.EtcdCluster.Endpoints()
	}
	return l.Etcd.Endpoints()
}

func (l *Lab) createMap(ctx context.Context) error {
	t, err := router.NewTable(l.cfg.SlotCount)
	if err != nil {
		return err
	}
	n := len(l.cfg.Cells)
	for i, c := range l.cfg.Cells {
		if err := t.AddCell(c); err != nil {
			return err
		}
		r := router.SlotRange{First: i * l.cfg.SlotCount / n, Last: (i+1)*l.cfg.SlotCount/n - 1}
		if err := t.Assign(r, c.ID); err != nil {
			return err
		}
	}
	_, err = l.Store.Create(ctx, "lab: two IDCs", t)
	return err
}

func (l *Lab) openDatabases(ctx context.Context) error {
	byDSN := map[string]*database{}
	for _, c := range l.cfg.Cells {
		dsn := l.cfg.DSN(c.ID)
		d := byDSN[dsn]
		if d == nil {
			db, dialect, err := sqldb.Open(ctx, dsn)
			if err != nil {
				return fmt.Errorf("lab: cell %s: %w", c.ID, err)
			}
			d = &database{dsn: dsn, db: db, dialect: dialect}
			byDSN[dsn] = d
			l.dbs = append(l.dbs, d)
			l.closers = append(l.closers, func() { db.Close() })
			// Replicated databases are migrated through the first one
			// only: the others receive the schema by replication (the
			// same rows written on two servers would collide).
			if !l.cfg.Replicated || len(l.dbs) == 1 {
				if err := migrate(ctx, db, dialect); err != nil {
					return fmt.Errorf("lab: cell %s: %w", c.ID, err)
				}
			} else if err := waitSchema(ctx, l.dbs[0].db, db); err != nil {
				return fmt.Errorf("lab: cell %s: %w", c.ID, err)
			}
		}
		d.cells = append(d.cells, c.ID)
		l.dbOf[c.ID] = d
	}
	return nil
}

// StartRouter starts cellrouter on the lab's router address (the same
// one after a StopRouter).
func (l *Lab) StartRouter(ctx context.Context) error {
	l.mu.Lock()
	running := l.stopRouter != nil
	l.mu.Unlock()
	if running {
		return errors.New("lab: the router is running")
	}
	ln, err := listenAgain(ctx, l.routerAddr)
	if err != nil {
		return fmt.Errorf("lab: router: %w", err)
	}
	disc, err := etcdcell.NewDiscovery(ctx, l.Client, l.cfg.Cluster, l.cfg.Logger)
	if err != nil {
		ln.Close()
		return err
	}
	cfg := gateway.DefaultConfig()
	cfg.HTTP.Routes = paycell.GatewayRoutes()
	opts := gateway.Options{Source: l.Store, Discovery: disc, Logger: l.cfg.Logger}
	var inj *reqfault.Injector
	if l.Net != nil {
		// Request faults at the router too (experiments naming no cell).
		if inj, err = reqfault.New(ctx, reqfault.Config{Cluster: l.cfg.Cluster, Client: l.Client, Logger: l.cfg.Logger}); err != nil {
			ln.Close()
			disc.Close()
			return err
		}
		opts.Middleware = inj.HTTP
		opts.GRPCInterceptor = inj.StreamServerInterceptor()
	}
	g, err := gateway.New(cfg, opts)
	if err != nil {
		ln.Close()
		disc.Close()
		inj.Close()
		return err
	}
	if err := g.Start(ctx); err != nil {
		ln.Close()
		g.Close()
		disc.Close()
		inj.Close()
		return err
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); g.Serve(sctx, gateway.Listeners{HTTP: ln}) }()
	l.mu.Lock()
	l.gw = g
	l.stopRouter = func(crash bool) {
		if crash {
			// A killed router: its listener and every connection go at
			// once (the front proxy resets the clients' connections).
			ln.Close()
		}
		stop()
		<-served
		g.Close()
		disc.Close()
		inj.Close()
	}
	l.mu.Unlock()
	for g.Ready() != nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: router not ready: %w", g.Ready())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// StopRouter stops cellrouter: gracefully, or (crash) as a killed process
// stops, every client connection reset. No-op when it is not running.
func (l *Lab) StopRouter(crash bool) {
	l.mu.Lock()
	stop := l.stopRouter
	l.stopRouter = nil
	l.mu.Unlock()
	if stop == nil {
		return
	}
	if crash && l.Net != nil {
		if p := l.Net.Get(ProxyRouterFront); p != nil {
			_ = p.Reset()
			defer p.Heal()
		}
	}
	stop(crash)
}

// Config returns the configuration with defaults applied.
func (l *Lab) Config() Config { return l.cfg }

// Table reads the current map (linearizable).
func (l *Lab) Table(ctx context.Context) (*router.Table, error) {
	t, _, err := l.Store.Load(ctx)
	return t, err
}

// Users returns n user keys, "u-0001".. .
func Users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u-%04d", i+1)
	}
	return out
}

// Cutover plans a move of everything the from cells own to the to cells
// in the given stages and runs it to the end with the lab's mover,
// reporting progress. It returns the final record.
func (l *Lab) Cutover(ctx context.Context, why string, req failover.Request, opts failover.Options, onProgress func(failover.Progress)) (*failover.State, error) {
	t, err := l.Table(ctx)
	if err != nil {
		return nil, err
	}
	p, err := failover.NewPlan(t, req)
	if err != nil {
		return nil, err
	}
	return l.RunPlan(ctx, why, p, opts, onProgress)
}

// MoveBack runs the reverse of a finished cutover's plan: exactly what it
// moved goes back, stage by stage.
func (l *Lab) MoveBack(ctx context.Context, why string, done *failover.State, opts failover.Options, onProgress func(failover.Progress)) (*failover.State, error) {
	t, err := l.Table(ctx)
	if err != nil {
		return nil, err
	}
	return l.RunPlan(ctx, why, done.Plan.Reverse(t.Epoch()), opts, onProgress)
}

// RunPlan runs a planned cutover to the end under the cutover lock.
func (l *Lab) RunPlan(ctx context.Context, why string, p *failover.Plan, opts failover.Options, onProgress func(failover.Progress)) (*failover.State, error) {
	ctl, err := etcdcutover.Acquire(ctx, l.Client, etcdcutover.Config{Cluster: l.cfg.Cluster, Actor: "lab", Logger: l.cfg.Logger})
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	mover, err := l.Mover(ctl.Table)
	if err != nil {
		return nil, err
	}
	st := failover.NewState(failover.NewID("cut", time.Now()), "lab", why, p, opts, time.Now())
	if err := ctl.Create(ctx, st); err != nil {
		return nil, err
	}
	r := failover.Runner{Control: ctl, Mover: mover, GateInterval: 100 * time.Millisecond, OnProgress: onProgress}
	return r.Run(ctx, st, failover.Event{Kind: failover.EvStart, At: time.Now()})
}

// Books quiesces the bank (every operation answered and its callback
// delivered), settles every cell's merchants, and checks the books
// against acks.
func (l *Lab) Books(ctx context.Context, acks []load.Ack) (books.Report, error) {
	if err := l.bank.quiesce(ctx); err != nil {
		return books.Report{}, err
	}
	if err := l.settleAll(ctx); err != nil {
		return books.Report{}, err
	}
	t, err := l.Table(ctx)
	if err != nil {
		return books.Report{}, err
	}
	in := books.Input{Table: t, Acks: acks, Admissions: l.clippedAdmissions(), Replicated: l.cfg.Replicated}
	in.BankIn, in.BankOut = l.bank.totals()
	for _, d := range l.dbs {
		if l.isLost(d) {
			continue
		}
		name := d.cells[0]
		if len(d.cells) > 1 {
			name = fmt.Sprint(d.cells)
		}
		in.Databases = append(in.Databases, books.Database{Name: name, DB: d.db, Cells: slices.Clone(d.cells)})
	}
	for _, w := range t.Whitelist() {
		in.Pinned = append(in.Pinned, w.Key)
	}
	return books.Check(ctx, in)
}

// clippedAdmissions are the guards' admission records, with the writes of
// cells whose database a failover severed cut at the sever: what they did
// later cannot reach the survivors' books (see SeveredWrites).
func (l *Lab) clippedAdmissions() []admission.Record {
	recs := l.Admissions.Records()
	sev := l.Severed()
	for i, r := range recs {
		at, ok := sev[r.Cell]
		if !ok {
			continue
		}
		// Only writes admitted before the sever: one admitted after it
		// (a fenced cell admitting) must still show.
		if r.Start.Before(at) && (r.End.IsZero() || r.End.After(at)) {
			recs[i].End = at
		}
	}
	return recs
}

// SeveredWrites counts the writes admitted by cells of a severed database
// that were still running at the sever (or admitted after it): their
// cells were cut off (fenced) but their database calls had not returned.
func (l *Lab) SeveredWrites() int {
	sev := l.Severed()
	n := 0
	for _, r := range l.Admissions.Records() {
		if at, ok := sev[r.Cell]; ok && r.Start.Before(at) && (r.End.IsZero() || r.End.After(at)) {
			n++
		}
	}
	return n
}

// Close stops everything in reverse order of start.
func (l *Lab) Close() {
	l.mu.Lock()
	cells := make([]*Cell, 0, len(l.cells))
	for _, c := range l.cells {
		cells = append(cells, c)
	}
	l.mu.Unlock()
	for _, c := range cells {
		c.Close()
	}
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
	l.closers = nil
}

// gtidMover waits for MariaDB replication: cells sharing a DSN share a
// server.
func (l *Lab) gtidMover() (failover.DataMover, error) {
	cells := map[string]mysql.Cell{}
	for id, d := range l.dbOf {
		cells[id] = mysql.Cell{Server: d.dsn, DB: d.db, Connection: ServerOf(l.idcOf[id])}
	}
	return mysql.New(mysql.Config{Cells: cells, RequireSemiSync: l.cfg.RequireSemiSync})
}
