package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cellkit/cellkit/infra/sqldb"
)

// TableSpec names a slot-scoped table and its primary key columns. Every
// such table also has the columns slot and owner. It is plain data, so that
// movers can take it as configuration without importing paycell.
type TableSpec struct {
	Name string
	Key  []string
}

// SlotTables are the tables whose rows belong to an owner key and move with
// its slot, in an order that suits copying (accounts first).
var SlotTables = []TableSpec{
	{Name: "accounts", Key: []string{"owner"}},
	{Name: "orders", Key: []string{"order_id"}},
	{Name: "txns", Key: []string{"txn_id"}},
	{Name: "entries", Key: []string{"txn_id", "leg"}},
	{Name: "bank_ops", Key: []string{"op_id"}},
	{Name: "requests", Key: []string{"owner", "request_id"}},
}

// CellTables are the cell-scoped tables, which never move.
var CellTables = []string{"settlements"}

// MigrationsTable records the applied migrations.
const MigrationsTable = "schema_migrations"

// LockName is the MySQL named lock Migrate holds.
const LockName = "cellkit.paycell.schema"

// LockWait bounds how long Migrate waits for another instance's migration on
// MySQL.
const LockWait = 60 * time.Second

// ErrMigrate is wrapped by every Migrate failure.
var ErrMigrate = errors.New("paycell schema migration failed")

// Migration is one schema version: statements per dialect, each safe to run
// again (IF NOT EXISTS) so that a migration interrupted half way on MySQL,
// where DDL is not transactional, can be rerun.
type Migration struct {
	Version int
	Name    string
	SQLite  []string
	MySQL   []string
}

func (m Migration) statements(d sqldb.Dialect) []string {
	if d == sqldb.MySQL {
		return m.MySQL
	}
	return m.SQLite
}

// Migrations are the schema's versions, oldest first. Append; never edit a
// released one.
var Migrations = []Migration{v1()}

// Column widths on MySQL. Owners and accounts are wider than user keys (at
// most 64): the cell-scoped owner is "cell:<cell id>" (cell ids run to 63),
// an account "merchant:<merchant>".
const (
	idType    = "VARCHAR(64)"
	ownerType = "VARCHAR(80)"
)

const mysqlTable = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

func v1() Migration {
	// Column lists shared by both dialects; types differ.
	type col struct{ name, sqlite, mysql string }
	tables := []struct {
		name    string
		cols    []col
		pk      []string
		indexes [][]string // besides (slot) and (owner)
		cellRow bool       // cell-scoped: no slot/owner indexes
	}{
		{name: "accounts", cols: []col{
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"balance", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"opened_at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"updated_at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
		}, pk: []string{"owner"}},
		{name: "orders", cols: []col{
			{"order_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"merchant", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"refunded", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"status", "TEXT NOT NULL", "VARCHAR(24) NOT NULL"},
			{"created_at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"updated_at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
		}, pk: []string{"order_id"}},
		{name: "txns", cols: []col{
			{"txn_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"kind", "TEXT NOT NULL", "VARCHAR(16) NOT NULL"},
			{"ref", "TEXT NOT NULL", idType + " NOT NULL"},
			{"request_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
		}, pk: []string{"txn_id"}, indexes: [][]string{{"ref"}}},
		{name: "entries", cols: []col{
			{"txn_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"leg", "INTEGER NOT NULL", "INT NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"account", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"settled_by", "TEXT", idType + " NULL"},
		}, pk: []string{"txn_id", "leg"}, indexes: [][]string{{"account", "settled_by"}}},
		{name: "bank_ops", cols: []col{
			{"op_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"kind", "TEXT NOT NULL", "VARCHAR(16) NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"status", "TEXT NOT NULL", "VARCHAR(16) NOT NULL"},
			{"created_at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"done_at", "INTEGER", "BIGINT NULL"},
		}, pk: []string{"op_id"}, indexes: [][]string{{"status"}}},
		{name: "requests", cols: []col{
			{"owner", "TEXT NOT NULL", ownerType + " NOT NULL"},
			{"request_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"method", "TEXT NOT NULL", "VARCHAR(32) NOT NULL"},
			{"result", "TEXT NOT NULL", "TEXT NOT NULL"},
			{"at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
		}, pk: []string{"owner", "request_id"}},
		{name: "settlements", cols: []col{
			{"batch_id", "TEXT NOT NULL", idType + " NOT NULL"},
			{"cell", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"merchant", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"legs", "INTEGER NOT NULL", "INT NOT NULL"},
			{"at", "INTEGER NOT NULL", "BIGINT NOT NULL"},
		}, pk: []string{"batch_id"}, indexes: [][]string{{"merchant"}}, cellRow: true},
	}
	m := Migration{Version: 1, Name: "books"}
	for _, t := range tables {
		idx := t.indexes
		if !t.cellRow {
			idx = append([][]string{{"slot"}, {"owner"}}, idx...)
			if t.pk[0] == "owner" {
				idx = append(idx[:1], idx[2:]...) // the primary key leads with owner
			}
		}
		var sl, my []string
		for _, c := range t.cols {
			sl = append(sl, c.name+" "+c.sqlite)
			my = append(my, c.name+" "+c.mysql)
		}
		pk := "PRIMARY KEY (" + strings.Join(t.pk, ", ") + ")"
		sl = append(sl, pk)
		my = append(my, pk)
		for _, cols := range idx {
			my = append(my, "KEY "+indexName(t.name, cols)+" ("+strings.Join(cols, ", ")+")")
		}
		m.SQLite = append(m.SQLite, "CREATE TABLE IF NOT EXISTS "+t.name+" (\n  "+strings.Join(sl, ",\n  ")+"\n)")
		for _, cols := range idx {
			m.SQLite = append(m.SQLite, "CREATE INDEX IF NOT EXISTS "+indexName(t.name, cols)+" ON "+t.name+" ("+strings.Join(cols, ", ")+")")
		}
		m.MySQL = append(m.MySQL, "CREATE TABLE IF NOT EXISTS "+t.name+" (\n  "+strings.Join(my, ",\n  ")+"\n)"+mysqlTable)
	}
	return m
}

func indexName(table string, cols []string) string {
	return table + "_" + strings.Join(cols, "_")
}

// Migrate brings db's schema up to the newest migration. It is idempotent
// and safe to run concurrently from several instances sharing the database.
func Migrate(ctx context.Context, db *sql.DB, d sqldb.Dialect) error {
	switch d {
	case sqldb.SQLite:
		return migrateSQLite(ctx, db)
	case sqldb.MySQL:
		return migrateMySQL(ctx, db)
	}
	return fmt.Errorf("%w: unknown dialect %q", ErrMigrate, d)
}

// Version returns the newest applied migration (0 for an empty database).
func Version(ctx context.Context, db *sql.DB) (int, error) {
	var v sql.NullInt64
	err := db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+MigrationsTable).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("paycell schema: read version: %w", err)
	}
	return int(v.Int64), nil
}

func createMigrations(d sqldb.Dialect) string {
	if d == sqldb.MySQL {
		return "CREATE TABLE IF NOT EXISTS " + MigrationsTable + " (version INT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, applied_at BIGINT NOT NULL)" + mysqlTable
	}
	return "CREATE TABLE IF NOT EXISTS " + MigrationsTable + " (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
}

// querier is what migrations run on: a transaction or a connection.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func applied(ctx context.Context, q querier) (map[int]bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT version FROM "+MigrationsTable)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
}

func apply(ctx context.Context, q querier, d sqldb.Dialect) error {
	if _, err := q.ExecContext(ctx, createMigrations(d)); err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrMigrate, MigrationsTable, err)
	}
	done, err := applied(ctx, q)
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", ErrMigrate, MigrationsTable, err)
	}
	for _, m := range Migrations {
		if done[m.Version] {
			continue
		}
		for _, stmt := range m.statements(d) {
			if _, err := q.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w: version %d (%s): %v\n%s", ErrMigrate, m.Version, m.Name, err, stmt)
			}
		}
		if _, err := q.ExecContext(ctx, d.InsertIgnore()+" "+MigrationsTable+" (version, name, applied_at) VALUES (?, ?, ?)",
			m.Version, m.Name, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("%w: record version %d: %v", ErrMigrate, m.Version, err)
		}
	}
	return nil
}

// migrateSQLite runs every migration in one transaction. sqldb opens SQLite
// with immediate transactions, so a second migrator waits for the first and
// then finds nothing to do.
func migrateSQLite(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: begin: %v", ErrMigrate, err)
	}
	defer tx.Rollback()
	if err := apply(ctx, tx, sqldb.SQLite); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrMigrate, err)
	}
	return nil
}

// migrateMySQL holds a named lock on one connection while it migrates:
// MySQL commits DDL implicitly, so a transaction would not serialize two
// migrators.
func migrateMySQL(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%w: connect: %v", ErrMigrate, err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", LockName, int(LockWait/time.Second)).Scan(&got); err != nil {
		return fmt.Errorf("%w: GET_LOCK(%q): %v", ErrMigrate, LockName, err)
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("%w: another instance held the lock %q for %v", ErrMigrate, LockName, LockWait)
	}
	defer func() {
		// A fresh context: release even when ctx is done.
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(rctx, "DO RELEASE_LOCK(?)", LockName)
	}()
	return apply(ctx, conn, sqldb.MySQL)
}
