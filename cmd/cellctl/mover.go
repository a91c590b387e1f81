package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/infra/sqlmove"
	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// The data movers --mover names.
const (
	moverNone = "none"
	moverCopy = "copy"
	moverGTID = "mysql-gtid"
)

// checkMover validates --mover, --db and --require-semi-sync.
func (rf *runFlags) checkMover() error {
	switch rf.mover {
	case moverNone:
		if len(rf.dbs) > 0 {
			return usagef(`--db is for the SQL movers: give --mover copy or --mover mysql-gtid`)
		}
		if rf.semiSync {
			return usagef(`--require-semi-sync is for --mover mysql-gtid`)
		}
		return nil
	case moverCopy, moverGTID:
	default:
		return usagef(`--mover %q: want "none" (stateless services), "copy" (copy paycell's rows between the cells' databases) or "mysql-gtid" (wait for MariaDB/MySQL replication)`, rf.mover)
	}
	if rf.semiSync && rf.mover != moverGTID {
		return usagef(`--require-semi-sync is for --mover mysql-gtid`)
	}
	if len(rf.dbs) == 0 {
		return usagef("--mover %s needs every cell's database: --db CELL=DSN for each cell (sqlite:PATH or mysql://USER@HOST:PORT/DB)", rf.mover)
	}
	rf.dsns = map[string]sqldb.DSN{}
	for _, d := range rf.dbs {
		id, p, err := parseCellDB(d, rf.dsns)
		if err != nil {
			return err
		}
		if rf.mover == moverGTID && p.Dialect != sqldb.MySQL {
			return usagef("--db %s: mysql-gtid needs a mysql:// DSN", id)
		}
		rf.dsns[id] = p
	}
	return nil
}

// parseCellDB parses one --db CELL=DSN flag; seen holds the cells
// already given (a cell given twice is an error).
func parseCellDB(d string, seen map[string]sqldb.DSN) (string, sqldb.DSN, error) {
	id, dsn, ok := strings.Cut(d, "=")
	if !ok || id == "" {
		return "", sqldb.DSN{}, usagef("--db %q: want CELL=DSN, e.g. a1=sqlite:/var/lib/cellkit/a1.db", d)
	}
	if err := (router.Cell{ID: id, IDC: "x", State: router.StateActive}).Check(); err != nil {
		return "", sqldb.DSN{}, usagef("--db %q: bad cell ID %q", d, id)
	}
	if _, dup := seen[id]; dup {
		return "", sqldb.DSN{}, usagef("--db: cell %s given twice", id)
	}
	p, err := sqldb.ParseDSN(dsn)
	if err != nil {
		return "", sqldb.DSN{}, usagef("--db %s: %s", id, message(err))
	}
	return id, p, nil
}

// buildMover opens the cells' databases and returns the mover, and a
// function that closes what it opened.
func (rf *runFlags) buildMover(ctx context.Context, table func(context.Context) (*router.Table, error)) (failover.DataMover, func(), error) {
	if rf.mover == moverNone || rf.mover == "" {
		return failover.NoneMover{}, func() {}, nil
	}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	if rf.mover == moverGTID {
		cells := map[string]mysql.Cell{}
		for _, d := range rf.dbs {
			id, dsn, _ := strings.Cut(d, "=") // checked by checkMover
			cells[id] = mysql.Cell{DSN: dsn}
		}
		m, err := mysql.New(mysql.Config{Cells: cells, RequireSemiSync: rf.semiSync})
		if err != nil {
			return nil, closeAll, fmt.Errorf("--mover mysql-gtid: %w", err)
		}
		closers = append(closers, func() { m.Close() })
		return m, closeAll, nil
	}
	cells := map[string]sqlmove.DB{}
	for id, d := range rf.dsns {
		db, err := sqldb.OpenDSN(ctx, d)
		if err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("--db %s: %w", id, err)
		}
		closers = append(closers, func() { db.Close() })
		cells[id] = sqlmove.DB{DB: db, Dialect: d.Dialect}
	}
	var tables []sqlmove.Table
	for _, t := range schema.SlotTables {
		tables = append(tables, sqlmove.Table{Name: t.Name, Key: t.Key})
	}
	// The runner's progress already says what the mover did.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := sqlmove.New(sqlmove.Config{Cells: cells, Tables: tables, Table: table, Logger: quiet})
	if err != nil {
		closeAll()
		return nil, func() {}, fmt.Errorf("--mover copy: %w", err)
	}
	return m, closeAll, nil
}
