package schema_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell/schema"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// engine opens two handles on one fresh, empty database (two instances of
// a cell), and reads its primary keys and indexes.
type engine struct {
	name    string
	dialect sqldb.Dialect
	open    func(t *testing.T) (a, b *sql.DB)
	// keys returns table -> primary key columns in order; indexed returns
	// table -> the first column of each secondary index.
	keys    func(t *testing.T, db *sql.DB) map[string][]string
	indexed func(t *testing.T, db *sql.DB) map[string][]string
}

var engines = []engine{
	{name: "sqlite", dialect: sqldb.SQLite, open: func(t *testing.T) (*sql.DB, *sql.DB) {
		path := filepath.Join(t.TempDir(), "books.db")
		return openDSN(t, "sqlite:"+path), openDSN(t, "sqlite:"+path)
	}, keys: sqliteKeys, indexed: sqliteIndexed},
	{name: "mariadb", dialect: sqldb.MySQL, open: func(t *testing.T) (*sql.DB, *sql.DB) {
		lab := mysqllabtest.Start(t, func(c *mysqllab.Config) { c.Servers, c.Async = []string{"idc-a"}, true })
		must(t, lab.CreateDatabase(ctxT(t), "pay"))
		return openDSN(t, lab.DSN("idc-a", "pay")), openDSN(t, lab.DSN("idc-a", "pay"))
	}, keys: mysqlKeys, indexed: mysqlIndexed},
}

// openDSN opens with sqldb.
func openDSN(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, _, err := sqldb.Open(ctxT(t), dsn)
	must(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrate(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			a, b := e.open(t)
			ctx := ctxT(t)
			// Two instances migrate at once; then again (idempotent).
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, db := range []*sql.DB{a, b} {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = schema.Migrate(ctx, db, e.dialect) }()
			}
			wg.Wait()
			must(t, errs[0])
			must(t, errs[1])
			must(t, schema.Migrate(ctx, a, e.dialect))
			v, err := schema.Version(ctx, a)
			must(t, err)
			if v != len(schema.Migrations) {
				t.Fatalf("version %d, want %d", v, len(schema.Migrations))
			}
			var n int
			must(t, a.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+schema.MigrationsTable).Scan(&n))
			if n != len(schema.Migrations) {
				t.Fatalf("%d migration rows, want %d", n, len(schema.Migrations))
			}

			keys, idx := e.keys(t, a), e.indexed(t, a)
			for _, ts := range schema.SlotTables {
				if !slices.Equal(keys[ts.Name], ts.Key) {
					t.Errorf("%s: primary key %v, SlotTables says %v", ts.Name, keys[ts.Name], ts.Key)
				}
				for _, col := range []string{"slot", "owner"} {
					if !slices.Contains(idx[ts.Name], col) && keys[ts.Name][0] != col {
						t.Errorf("%s: no index leads with %s (indexes lead with %v)", ts.Name, col, idx[ts.Name])
					}
				}
			}
			for _, name := range schema.CellTables {
				if len(keys[name]) == 0 {
					t.Errorf("cell table %s missing", name)
				}
			}
			// Binary comparison of keys on MySQL: owners differing in case
			// are different owners.
			ins := e.dialect.InsertIgnore() + " accounts (owner, slot, balance, opened_at, updated_at) VALUES (?, 0, 0, 0, 0)"
			for _, o := range []string{"u-a", "U-A"} {
				_, err := a.ExecContext(ctx, ins, o)
				must(t, err)
			}
			must(t, a.QueryRowContext(ctx, "SELECT COUNT(*) FROM accounts").Scan(&n))
			if n != 2 {
				t.Fatalf("owners u-a and U-A collapsed into %d row(s)", n)
			}
		})
	}
}

func TestMigrateUnknownDialect(t *testing.T) {
	db := openDSN(t, "sqlite:"+filepath.Join(t.TempDir(), "x.db"))
	if err := schema.Migrate(ctxT(t), db, "postgres"); err == nil || !strings.Contains(err.Error(), "unknown dialect") {
		t.Fatalf("Migrate with an unknown dialect: %v", err)
	}
}

func sqliteKeys(t *testing.T, db *sql.DB) map[string][]string {
	out := map[string][]string{}
	for _, table := range sqliteTables(t, db) {
		rows, err := db.QueryContext(ctxT(t), "SELECT name, pk FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", table)
		must(t, err)
		for rows.Next() {
			var name string
			var pk int
			must(t, rows.Scan(&name, &pk))
			out[table] = append(out[table], name)
		}
		must(t, rows.Err())
		rows.Close()
	}
	return out
}

func sqliteIndexed(t *testing.T, db *sql.DB) map[string][]string {
	out := map[string][]string{}
	for _, table := range sqliteTables(t, db) {
		rows, err := db.QueryContext(ctxT(t), `SELECT ii.name FROM pragma_index_list(?) il, pragma_index_info(il.name) ii WHERE ii.seqno = 0`, table)
		must(t, err)
		for rows.Next() {
			var col string
			must(t, rows.Scan(&col))
			out[table] = append(out[table], col)
		}
		must(t, rows.Err())
		rows.Close()
	}
	return out
}

func sqliteTables(t *testing.T, db *sql.DB) []string {
	rows, err := db.QueryContext(ctxT(t), "SELECT name FROM sqlite_master WHERE type = 'table'")
	must(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		must(t, rows.Scan(&n))
		out = append(out, n)
	}
	return out
}

func mysqlKeys(t *testing.T, db *sql.DB) map[string][]string {
	return mysqlIndexColumns(t, db, "= 'PRIMARY'", "")
}

func mysqlIndexed(t *testing.T, db *sql.DB) map[string][]string {
	return mysqlIndexColumns(t, db, "<> 'PRIMARY'", " AND seq_in_index = 1")
}

func mysqlIndexColumns(t *testing.T, db *sql.DB, index, extra string) map[string][]string {
	rows, err := db.QueryContext(ctxT(t), fmt.Sprintf(`SELECT table_name, column_name FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND index_name %s%s ORDER BY table_name, index_name, seq_in_index`, index, extra))
	must(t, err)
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var table, col string
		must(t, rows.Scan(&table, &col))
		out[table] = append(out[table], col)
	}
	must(t, rows.Err())
	return out
}
