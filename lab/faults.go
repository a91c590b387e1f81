package lab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/chaos/netfault"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// The fault proxies of a lab started with Faults, by name:
//
//	front/router                    clients (load, bank callbacks) → cellrouter
//	etcd/<IDC>/m<i>                 the IDC's cells → etcd member i
//	etcd/controller/m<i>            the controller (cutovers, failovers) → etcd member i
//	router/<IDC>/<cell>             cellrouter → the cell
//	db/<IDC>/<server>               the IDC's cells → their MariaDB server
//	replication/<IDC>/to-<server>   the IDC's server's binlog → the replica on <server>
//	controller/<IDC>/db             the controller's data mover → the IDC's server
//
// Paths, as drills name them: etcd, router, db, replication, controller.
const ProxyRouterFront = "front/router"

// Paths a network fault can cut.
var Paths = []string{"etcd", "router", "db", "replication", "controller"}

// ServerOf is the MariaDB server of an IDC: its name in lower case.
func ServerOf(idc string) string { return strings.ToLower(idc) }

// IDCOf returns the IDC of cell id ("" if none).
func (l *Lab) IDCOf(id string) string { return l.idcOf[id] }

// CellsOf returns the cells of idc, in map order.
func (l *Lab) CellsOf(idc string) []string {
	var out []string
	for _, c := range l.cfg.Cells {
		if c.IDC == idc {
			out = append(out, c.ID)
		}
	}
	return out
}

// IDCs returns the IDCs of the lab's cells, in order of first appearance.
func (l *Lab) IDCs() []string {
	var out []string
	for _, c := range l.cfg.Cells {
		if !slices.Contains(out, c.IDC) {
			out = append(out, c.IDC)
		}
	}
	return out
}

// ProxiesFor returns the fault proxies on the given paths of an IDC (or of
// one cell when cell is set): every proxy whose traffic an IDC partition
// on those paths would cut.
func (l *Lab) ProxiesFor(idc, cell string, paths []string) ([]*netfault.Proxy, error) {
	if l.Net == nil {
		return nil, errors.New("lab: started without Faults: no fault proxies")
	}
	if len(paths) == 0 {
		paths = Paths
	}
	server := ServerOf(idc)
	var out []*netfault.Proxy
	for _, path := range paths {
		var pred func(string) bool
		switch path {
		case "etcd":
			if cell != "" {
				return nil, fmt.Errorf("lab: the etcd path is per IDC, not per cell (%s)", cell)
			}
			pred = func(n string) bool { return strings.HasPrefix(n, "etcd/"+idc+"/") }
		case "router":
			pred = func(n string) bool {
				return strings.HasPrefix(n, "router/"+idc+"/") && (cell == "" || n == "router/"+idc+"/"+cell)
			}
		case "db":
			pred = func(n string) bool { return strings.HasPrefix(n, "db/"+idc+"/") }
		case "replication":
			// Both directions: the IDC's binlog going out, and its
			// replica's link in.
			pred = func(n string) bool {
				return strings.HasPrefix(n, "replication/"+idc+"/") ||
					(strings.HasPrefix(n, "replication/") && strings.HasSuffix(n, "/to-"+server))
			}
		case "controller":
			pred = func(n string) bool { return n == "controller/"+idc+"/db" }
		default:
			return nil, fmt.Errorf("lab: path %q (want one of %s)", path, strings.Join(Paths, ", "))
		}
		out = append(out, l.Net.Select(pred)...)
	}
	return out, nil
}

// ControllerProxies are the controller's links to etcd (a killed
// controller's connections are reset there).
func (l *Lab) ControllerProxies() []*netfault.Proxy {
	if l.Net == nil {
		return nil
	}
	return l.Net.Select(func(n string) bool { return strings.HasPrefix(n, "etcd/controller/") })
}

// wireRouter picks the router's address; with Faults, clients reach it
// through the front proxy.
func (l *Lab) wireRouter() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.routerAddr = ln.Addr().String()
	ln.Close()
	l.RouterURL = "http://" + l.routerAddr
	if l.Net != nil {
		p, err := l.Net.Proxy(ProxyRouterFront, l.routerAddr)
		if err != nil {
			return err
		}
		l.RouterURL = "http://" + p.Addr()
	}
	return nil
}

// wireReplication puts a proxy on every replication link (MariaDB with
// Faults).
func (l *Lab) wireReplication(ctx context.Context) error {
	if l.Net == nil || l.cfg.MariaDB == nil {
		return nil
	}
	for _, src := range l.IDCs() {
		for _, dst := range l.IDCs() {
			if src == dst {
				continue
			}
			p, err := l.Net.Proxy("replication/"+src+"/to-"+ServerOf(dst), l.cfg.MariaDB.Addr(ServerOf(src)))
			if err != nil {
				return err
			}
			if err := l.cfg.MariaDB.SetSourceAddr(ctx, ServerOf(dst), ServerOf(src), p.Addr()); err != nil {
				return fmt.Errorf("lab: %w", err)
			}
		}
	}
	return nil
}

// proxyFor returns the proxy named name to upstream, creating it.
func (l *Lab) proxyFor(name, upstream string) (*netfault.Proxy, error) {
	if p := l.Net.Get(name); p != nil {
		return p, nil
	}
	return l.Net.Proxy(name, upstream)
}

// etcdEndpointsVia returns the etcd endpoints as seen by who (an IDC or
// "controller"): through its proxies with Faults.
func (l *Lab) etcdEndpointsVia(who string) ([]string, error) {
	eps := l.EtcdEndpoints()
	if l.Net == nil {
		return eps, nil
	}
	out := make([]string, len(eps))
	for i, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil {
			return nil, err
		}
		p, err := l.proxyFor(fmt.Sprintf("etcd/%s/m%d", who, i), u.Host)
		if err != nil {
			return nil, err
		}
		out[i] = "http://" + p.Addr()
	}
	return out, nil
}

func (l *Lab) dialEtcdVia(ctx context.Context, who string) (*clientv3.Client, error) {
	eps, err := l.etcdEndpointsVia(who)
	if err != nil {
		return nil, err
	}
	return etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: eps, DialTimeout: 5 * time.Second})
}

// viaProxy opens dsn (a mysql:// DSN) through a proxy named name.
func (l *Lab) viaProxy(ctx context.Context, name, dsn string) (*sql.DB, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, err
	}
	p, err := l.proxyFor(name, u.Host)
	if err != nil {
		return nil, err
	}
	u.Host = p.Addr()
	db, _, err := sqldb.Open(ctx, u.String())
	return db, err
}

// cellDB is the database handle cells of idc use for d: through the db
// proxy for MariaDB with Faults, else the lab's own.
func (l *Lab) cellDB(ctx context.Context, idc string, d *database) (*sql.DB, error) {
	if l.Net == nil || d.dialect != sqldb.MySQL {
		return d.db, nil
	}
	l.mu.Lock()
	db := l.cellDBs[idc+" "+d.dsn]
	l.mu.Unlock()
	if db != nil {
		return db, nil
	}
	db, err := l.viaProxy(ctx, "db/"+idc+"/"+ServerOf(idc), d.dsn)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.cellDBs[idc+" "+d.dsn] = db
	l.mu.Unlock()
	l.closers = append(l.closers, func() { db.Close() })
	return db, nil
}

// controllerDB is the controller's handle on d.
func (l *Lab) controllerDB(ctx context.Context, d *database) (*sql.DB, error) {
	if l.Net == nil || d.dialect != sqldb.MySQL {
		return d.db, nil
	}
	l.mu.Lock()
	db := l.ctlDBs[d]
	l.mu.Unlock()
	if db != nil {
		return db, nil
	}
	db, err := l.viaProxy(ctx, "controller/"+l.idcOf[d.cells[0]]+"/db", d.dsn)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.ctlDBs[d] = db
	l.mu.Unlock()
	l.closers = append(l.closers, func() { db.Close() })
	return db, nil
}

// listenAgain listens on addr ("127.0.0.1:0" style allowed), retrying for
// a few seconds while a previous owner's port is still being released.
func listenAgain(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CrashCell stops cell id's instance as kill -9 would (see
// cellsrv.Cell.Crash): nothing drained, its lease left to expire.
func (l *Lab) CrashCell(id string) error {
	l.mu.Lock()
	c := l.cells[id]
	delete(l.cells, id)
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("lab: cell %s is not running", id)
	}
	c.crash()
	return nil
}

// MarkLost takes the databases of idc out of the book checks: a server
// that was killed, or cut off and failed over, is no longer the truth
// (with replication, what it had is in the survivor's copy; what it did
// not send is what the RPO counts).
func (l *Lab) MarkLost(idc string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.dbs {
		all := true
		for _, c := range d.cells {
			all = all && l.idcOf[c] == idc
		}
		if all {
			l.lost[d] = true
		}
	}
}

func (l *Lab) isLost(d *database) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost[d]
}

// Controller is a cutover controller (cellctl's part) in the lab: its own
// etcd client, through the controller proxies with Faults.
type Controller struct {
	l   *Lab
	Cli *clientv3.Client
	// Emergency makes its mysql-gtid mover pass the data gate when the
	// source server is unreachable, once the target applied what it
	// received (an emergency failover).
	Emergency bool
}

// NewController dials etcd for a controller.
func (l *Lab) NewController(ctx context.Context) (*Controller, error) {
	cli, err := l.dialEtcdVia(ctx, "controller")
	if err != nil {
		return nil, err
	}
	return &Controller{l: l, Cli: cli}, nil
}

// Close closes the controller's client.
func (c *Controller) Close() { c.Cli.Close() }

// Mover returns the lab's data mover as this controller sees the
// databases.
func (c *Controller) Mover(ctx context.Context, table func(context.Context) (*router.Table, error)) (failover.DataMover, error) {
	l := c.l
	if l.cfg.Mover != MoverGTID {
		return l.Mover(table)
	}
	cells := map[string]mysql.Cell{}
	for id, d := range l.dbOf {
		db, err := l.controllerDB(ctx, d)
		if err != nil {
			return nil, err
		}
		cells[id] = mysql.Cell{Server: d.dsn, DB: db, Connection: ServerOf(l.idcOf[id])}
	}
	cfg := mysql.Config{Cells: cells, RequireSemiSync: l.cfg.RequireSemiSync && !c.Emergency, DrainIfSourceDown: c.Emergency}
	if c.Emergency {
		cfg.SourceTimeout = 2 * time.Second
	}
	cfg.OnSever = l.severedAt
	return mysql.New(cfg)
}

// severedAt notes that a failover severed the database of cells from the
// survivors: from then on nothing those cells write can reach them.
func (l *Lab) severedAt(from []string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range from {
		if _, done := l.severed[c]; !done {
			l.severed[c] = at
		}
	}
}

// Severed returns, for each cell whose database a failover severed from
// the survivors, when.
func (l *Lab) Severed() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Time{}
	for k, v := range l.severed {
		out[k] = v
	}
	return out
}

// Run runs st (created or resumed) to its end under the cutover lock,
// waiting up to lockWait for the lock. onControl, if set, receives the
// lock holder (a drill abandons it to kill the controller).
func (c *Controller) Run(ctx context.Context, st *failover.State, ev failover.Event, create bool, lockWait time.Duration, onControl func(*etcdcutover.Control), onProgress func(failover.Progress)) (*failover.State, error) {
	actx, cancel := context.WithTimeout(ctx, lockWait)
	ctl, err := etcdcutover.Acquire(actx, c.Cli, etcdcutover.Config{Cluster: c.l.cfg.Cluster, Actor: "drill", LockTTL: 5 * time.Second, Logger: c.l.cfg.Logger})
	cancel()
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	if onControl != nil {
		onControl(ctl)
	}
	mover, err := c.Mover(ctx, ctl.Table)
	if err != nil {
		return nil, err
	}
	if closer, ok := mover.(interface{ Close() error }); ok {
		defer closer.Close()
	}
	if create {
		if err := ctl.Create(ctx, st); err != nil {
			return nil, err
		}
	} else {
		// Read it again under the lock: the last runner may have moved it.
		got, _, err := ctl.Records().Get(ctx, st.ID)
		if err != nil {
			return nil, err
		}
		st = got
		if st.Status == "" {
			ev.Kind = failover.EvStart
		}
	}
	r := failover.Runner{Control: ctl, Mover: mover, GateInterval: 100 * time.Millisecond, OnProgress: onProgress}
	return r.Run(ctx, st, ev)
}

// Alive returns the guard instances of cells that show signs of life over
// window (etcdcutover.Alive), as the controller sees them.
func (c *Controller) Alive(ctx context.Context, cells []string, window time.Duration) ([]string, error) {
	acks, err := etcdcutover.Alive(ctx, c.Cli, c.l.cfg.Cluster, cells, window)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range acks {
		out = append(out, a.Cell+"/"+a.Instance)
	}
	return out, nil
}

// FailoverPlan plans the emergency failover of fromIDC to toIDC: every
// slot and whitelisted key of its cells, in one stage.
func (c *Controller) FailoverPlan(ctx context.Context, fromIDC, toIDC string) (*failover.Plan, error) {
	st, err := etcdstore.New(c.Cli, etcdstore.Config{Cluster: c.l.cfg.Cluster, Actor: "drill"})
	if err != nil {
		return nil, err
	}
	t, _, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	return failover.NewPlan(t, failover.Request{
		From:   failover.Endpoints{IDCs: []string{fromIDC}},
		To:     failover.Endpoints{IDCs: []string{toIDC}},
		Stages: []failover.StageSpec{{Fraction: failover.Fraction{Num: 1, Den: 1}}},
	})
}
