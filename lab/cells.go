package lab

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/chaos/reqfault"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/infra/sqlmove"
	"github.com/cellkit/cellkit/paycell/bank"
	"github.com/cellkit/cellkit/paycell/cellsrv"
	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// Cell is one running paycell instance of the lab.
type Cell struct {
	ID  string
	srv *cellsrv.Cell
	cli *clientv3.Client // its own etcd client
	inj *reqfault.Injector
}

// HTTPAddr is the instance's own address (bypassing the router).
func (c *Cell) HTTPAddr() string { return c.srv.HTTPAddr() }

// Server is the paycell instance.
func (c *Cell) Server() *cellsrv.Cell { return c.srv }

// Close stops the instance gracefully (its lease is revoked).
func (c *Cell) Close() error {
	err := c.srv.Close()
	c.inj.Close()
	c.cli.Close()
	return err
}

// crash stops the instance as kill -9 would.
func (c *Cell) crash() {
	c.srv.Crash()
	c.inj.Close()
	c.cli.Close()
}

func migrate(ctx context.Context, db *sql.DB, d sqldb.Dialect) error {
	return schema.Migrate(ctx, db, d)
}

// waitSchema waits until replica has the schema version primary has.
func waitSchema(ctx context.Context, primary, replica *sql.DB) error {
	want, err := schema.Version(ctx, primary)
	if err != nil {
		return err
	}
	for {
		got, err := schema.Version(ctx, replica)
		if err == nil && got >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("schema version %d not replicated (have %d, %v): %w", want, got, err, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartCell starts an instance of cell id over the cell's database, on
// the cell's address (the same across restarts, so routers and proxies
// find it again). A running instance of the cell is closed first.
func (l *Lab) StartCell(ctx context.Context, id string) (*Cell, error) {
	d := l.dbOf[id]
	if d == nil {
		return nil, fmt.Errorf("lab: no cell %s", id)
	}
	l.mu.Lock()
	old := l.cells[id]
	delete(l.cells, id)
	addr := l.cellAddr[id]
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	idc := l.idcOf[id]
	ln, err := listenAgain(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("lab: cell %s: %w", id, err)
	}
	advertise := ln.Addr().String()
	if l.Net != nil {
		p, err := l.proxyFor("router/"+idc+"/"+id, advertise)
		if err != nil {
			ln.Close()
			return nil, err
		}
		advertise = p.Addr()
	}
	db, err := l.cellDB(ctx, idc, d)
	if err != nil {
		ln.Close()
		return nil, err
	}
	cli, err := l.dialEtcdVia(ctx, idc)
	if err != nil {
		ln.Close()
		return nil, err
	}
	inj, err := reqfault.New(ctx, reqfault.Config{Cluster: l.cfg.Cluster, Client: cli, Cell: id, IDC: idc, Logger: l.cfg.Logger})
	if err != nil {
		cli.Close()
		ln.Close()
		return nil, err
	}
	g := etcdcell.Local(id, id+"-0")
	g.LeaseTTL = l.cfg.LeaseTTL
	srv, err := cellsrv.NewCell(ctx, cellsrv.Config{
		Chaos:   inj,
		Cluster: l.cfg.Cluster, Cell: id, Instance: fmt.Sprintf("%s-%d", id, time.Now().UnixNano()%1e6),
		Etcd: cli, DB: db, Dialect: d.dialect, HTTP: ln, AdvertiseHTTP: advertise,
		Bank: l.bank.b, SettleEvery: l.cfg.SettleEvery, Guard: g,
		OnAdmit: l.Admissions.Admitted, OnRelease: l.Admissions.Released,
		Logger: l.cfg.Logger,
	})
	if err != nil {
		inj.Close()
		cli.Close()
		return nil, err
	}
	c := &Cell{ID: id, srv: srv, cli: cli, inj: inj}
	l.mu.Lock()
	l.cells[id] = c
	l.cellAddr[id] = srv.HTTPAddr()
	l.mu.Unlock()
	return c, nil
}

// Cell returns the running instance of cell id, or nil.
func (l *Lab) Cell(id string) *Cell {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cells[id]
}

// DB returns the database of cell id.
func (l *Lab) DB(id string) (*sql.DB, sqldb.Dialect) {
	d := l.dbOf[id]
	if d == nil {
		return nil, ""
	}
	return d.db, d.dialect
}

// bankHandle is the lab's virtual bank.
type bankHandle struct{ b *bank.Bank }

func (l *Lab) startBank(context.Context) error {
	// The bank calls back through the router (its listener is open, it
	// serves once the cells are up; callbacks retry until then).
	b, err := bank.New(bank.Config{CallbackURL: l.RouterURL, Delay: l.cfg.BankDelay, Seed: 1, Logger: l.cfg.Logger})
	if err != nil {
		return err
	}
	l.bank = &bankHandle{b: b}
	l.closers = append(l.closers, func() { b.Close() })
	return nil
}

func (h *bankHandle) quiesce(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.b.Quiet(qctx); err != nil {
		return fmt.Errorf("lab: waiting for the bank's callbacks: %w", err)
	}
	if u := h.b.Undelivered(); len(u) > 0 {
		return fmt.Errorf("lab: the bank could not deliver %d callbacks (first: %s %s: %s)", len(u), u[0].ID, u[0].Delivery, u[0].LastError)
	}
	return nil
}

func (h *bankHandle) totals() (in, out int64) {
	t := h.b.Totals()
	return t.DeliveredDeposits, t.DeliveredPayouts
}

// Bank is the lab's virtual bank.
func (l *Lab) Bank() *bank.Bank { return l.bank.b }

// settleAll runs every cell's settler once.
func (l *Lab) settleAll(ctx context.Context) error {
	l.mu.Lock()
	cells := make([]*Cell, 0, len(l.cells))
	for _, c := range l.cells {
		cells = append(cells, c)
	}
	l.mu.Unlock()
	for _, c := range cells {
		if d := l.dbOf[c.ID]; d != nil && l.isLost(d) {
			continue // its books are no longer the truth (and may hang)
		}
		if s := c.srv.Settler(); s != nil {
			if _, err := s.SettleOnce(ctx); err != nil {
				return fmt.Errorf("lab: settle %s: %w", c.ID, err)
			}
		}
	}
	return nil
}

// Mover returns the configured data mover; table reads the current map
// (the runner's Control.Table).
func (l *Lab) Mover(table func(context.Context) (*router.Table, error)) (failover.DataMover, error) {
	switch l.cfg.Mover {
	case MoverNone:
		return failover.NoneMover{}, nil
	case MoverCopy:
		cells := map[string]sqlmove.DB{}
		for id, d := range l.dbOf {
			cells[id] = sqlmove.DB{DB: d.db, Dialect: d.dialect}
		}
		var tables []sqlmove.Table
		for _, t := range schema.SlotTables {
			tables = append(tables, sqlmove.Table{Name: t.Name, Key: t.Key})
		}
		return sqlmove.New(sqlmove.Config{Cells: cells, Tables: tables, Table: table, Logger: l.cfg.Logger})
	}
	return l.gtidMover()
}
