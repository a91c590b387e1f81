package lab

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"time"

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
}

// HTTPAddr is the instance's own address (bypassing the router).
func (c *Cell) HTTPAddr() string { return c.srv.HTTPAddr() }

// Server is the paycell instance.
func (c *Cell) Server() *cellsrv.Cell { return c.srv }

// Close stops the instance gracefully (its lease is revoked).
func (c *Cell) Close() error { return c.srv.Close() }

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

// StartCell starts an instance of cell id (after a crash or a Close, a
// new one) over the cell's database.
func (l *Lab) StartCell(ctx context.Context, id string) (*Cell, error) {
	d := l.dbOf[id]
	if d == nil {
		return nil, fmt.Errorf("lab: no cell %s", id)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := etcdcell.Local(id, id+"-0")
	g.LeaseTTL = l.cfg.LeaseTTL
	srv, err := cellsrv.NewCell(ctx, cellsrv.Config{
		Cluster: l.cfg.Cluster, Cell: id, Instance: fmt.Sprintf("%s-%d", id, time.Now().UnixNano()%1e6),
		Etcd: l.Client, DB: d.db, Dialect: d.dialect, HTTP: ln,
		Bank: l.bank.b, SettleEvery: l.cfg.SettleEvery, Guard: g,
		OnAdmit: l.Admissions.Admitted, OnRelease: l.Admissions.Released,
		Logger: l.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	c := &Cell{ID: id, srv: srv}
	l.mu.Lock()
	if old := l.cells[id]; old != nil {
		defer old.Close()
	}
	l.cells[id] = c
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
