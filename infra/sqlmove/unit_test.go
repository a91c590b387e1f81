package sqlmove

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

func TestConfigValidate(t *testing.T) {
	db1, db2 := &sql.DB{}, &sql.DB{}
	table := func(context.Context) (*router.Table, error) { return nil, nil }
	good := func() Config {
		return Config{
			Cells:  map[string]DB{"a1": {DB: db1, Dialect: sqldb.SQLite}, "b1": {DB: db2, Dialect: sqldb.MySQL}},
			Tables: []Table{{Name: "accounts", Key: []string{"owner"}}, {Name: "entries", Key: []string{"txn_id", "leg"}}},
			Table:  table,
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"good", func(*Config) {}, true},
		{"batch set", func(c *Config) { c.BatchRows = 10 }, true},
		{"no cells", func(c *Config) { c.Cells = nil }, false},
		{"bad cell id", func(c *Config) { c.Cells["-x"] = DB{DB: &sql.DB{}, Dialect: sqldb.SQLite} }, false},
		{"nil db", func(c *Config) { c.Cells["c1"] = DB{Dialect: sqldb.SQLite} }, false},
		{"bad dialect", func(c *Config) { c.Cells["c1"] = DB{DB: &sql.DB{}, Dialect: "postgres"} }, false},
		{"shared db", func(c *Config) { c.Cells["c1"] = DB{DB: db1, Dialect: sqldb.SQLite} }, false},
		{"no tables", func(c *Config) { c.Tables = nil }, false},
		{"bad table name", func(c *Config) { c.Tables[0].Name = "accounts; DROP" }, false},
		{"journal as table", func(c *Config) { c.Tables[0].Name = JournalTable }, false},
		{"table twice", func(c *Config) { c.Tables[1] = c.Tables[0] }, false},
		{"no key", func(c *Config) { c.Tables[0].Key = nil }, false},
		{"bad key column", func(c *Config) { c.Tables[0].Key = []string{"a b"} }, false},
		{"key column twice", func(c *Config) { c.Tables[1].Key = []string{"leg", "leg"} }, false},
		{"no table func", func(c *Config) { c.Table = nil }, false},
		{"negative batch", func(c *Config) { c.BatchRows = -1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadConfig)) {
				t.Fatalf("Validate: %v", err)
			}
			if _, nerr := New(c); (nerr == nil) != (err == nil) {
				t.Fatalf("New: %v, Validate: %v", nerr, err)
			}
		})
	}
	m, err := New(good())
	must(t, err)
	if m.cfg.BatchRows != DefaultBatchRows || m.cfg.Clock == nil || m.cfg.Logger == nil || m.Name() != "copy" {
		t.Errorf("defaults not applied: %+v", m.cfg)
	}
}

func TestNormalize(t *testing.T) {
	when := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		name    string
		dialect sqldb.Dialect
		dbType  string
		in      any
		want    any
	}{
		{"nil", sqldb.SQLite, "TEXT", nil, nil},
		{"int64", sqldb.SQLite, "INTEGER", int64(-5), int64(-5)},
		{"int32", sqldb.MySQL, "INT", int32(7), int64(7)},
		{"uint64 small", sqldb.MySQL, "UNSIGNED BIGINT", uint64(9), int64(9)},
		{"uint64 huge", sqldb.MySQL, "UNSIGNED BIGINT", uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"bool", sqldb.SQLite, "BOOLEAN", true, int64(1)},
		{"float32", sqldb.MySQL, "FLOAT", float32(0.5), 0.5},
		{"string", sqldb.SQLite, "TEXT", "héllo", "héllo"},
		{"time", sqldb.MySQL, "DATETIME", when, when.UTC()},
		{"sqlite empty blob", sqldb.SQLite, "BLOB", []byte(nil), []byte{}},
		{"sqlite blob", sqldb.SQLite, "BLOB", []byte{0, 1}, []byte{0, 1}},
		{"mysql varchar", sqldb.MySQL, "VARCHAR", []byte("abc"), "abc"},
		{"mysql text", sqldb.MySQL, "MEDIUMTEXT", []byte("abc"), "abc"},
		{"mysql empty text", sqldb.MySQL, "TEXT", []byte{}, ""},
		{"mysql blob", sqldb.MySQL, "BLOB", []byte("abc"), []byte("abc")},
		{"mysql empty blob", sqldb.MySQL, "LONGBLOB", []byte(nil), []byte{}},
		{"mysql varbinary", sqldb.MySQL, "VARBINARY", []byte{9}, []byte{9}},
		{"mysql bigint text", sqldb.MySQL, "BIGINT", []byte("-9223372036854775808"), int64(math.MinInt64)},
		{"mysql unsigned text", sqldb.MySQL, "UNSIGNED BIGINT", []byte("18446744073709551615"), uint64(math.MaxUint64)},
		{"mysql double text", sqldb.MySQL, "DOUBLE", []byte("0.1"), 0.1},
		{"mysql decimal", sqldb.MySQL, "DECIMAL", []byte("12.50"), "12.50"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalize(tc.dialect, tc.dbType, tc.in)
			must(t, err)
			a, err := encodeRow(nil, []string{"c"}, []any{got})
			must(t, err)
			b, err := encodeRow(nil, []string{"c"}, []any{tc.want})
			must(t, err)
			if string(a) != string(b) {
				t.Fatalf("normalize(%T %v) = %T %v, want %T %v", tc.in, tc.in, got, got, tc.want, tc.want)
			}
		})
	}
	if _, err := normalize(sqldb.SQLite, "X", struct{}{}); !errors.Is(err, ErrUnsupportedValue) {
		t.Errorf("a struct: %v", err)
	}
	if _, err := normalize(sqldb.MySQL, "INT", []byte("x")); !errors.Is(err, ErrUnsupportedValue) {
		t.Errorf("a bad integer: %v", err)
	}
}

// The encoding tells apart what a checksum must not confuse.
func TestEncodingDistinguishes(t *testing.T) {
	cols := []string{"a", "b"}
	rows := [][]any{
		{nil, "x"},
		{"", "x"},
		{[]byte{}, "x"},
		{"x", nil},
		{int64(0), "x"},
		{0.0, "x"},
		{"ab", "x"},
		{"a", "bx"},
		{[]byte("x"), "x"},
		{"x", "x"},
	}
	seen := map[string]int{}
	for i, r := range rows {
		b, err := encodeRow(nil, cols, r)
		must(t, err)
		if j, ok := seen[string(b)]; ok {
			t.Errorf("rows %v and %v encode alike", rows[j], r)
		}
		seen[string(b)] = i
	}
}

func TestDigest(t *testing.T) {
	rows := [][]any{{int64(1), "a"}, {int64(2), "b"}, {int64(3), nil}}
	sum := func(order ...int) Digest {
		h := rowHasher{cols: []string{"k", "v"}}
		var d Digest
		for _, i := range order {
			must(t, h.add(&d, rows[i]))
		}
		return d
	}
	all := sum(0, 1, 2)
	if all != sum(2, 0, 1) {
		t.Error("the digest depends on row order")
	}
	if all.Rows != 3 || sum(0).Plus(sum(1, 2)) != all {
		t.Errorf("Plus: %v + %v != %v", sum(0), sum(1, 2), all)
	}
	if sum(0, 1) == all || sum(0, 0, 1, 2) == all {
		t.Error("different row sets digest alike")
	}
	b, err := json.Marshal(all)
	must(t, err)
	var back Digest
	must(t, json.Unmarshal(b, &back))
	if back != all {
		t.Errorf("JSON round trip %s: %v != %v", b, back, all)
	}
	if err := json.Unmarshal([]byte(`{"rows":1,"sum":"zz"}`), &back); err == nil {
		t.Error("a bad sum decoded")
	}
}

func TestCommas(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := commas(in); got != want {
			t.Errorf("commas(%d) = %q, want %q", in, got, want)
		}
	}
}

// A target whose table lacks a column (a migration not applied yet) is
// refused before anything is written.
func TestSchemaMismatch(t *testing.T) {
	e := newEnv(t, startSQLite(t), threeCells(t), 1)
	_, err := e.cells["b1"].DB.ExecContext(ctxT(t), "ALTER TABLE orders DROP COLUMN memo")
	must(t, err)
	mv := slots(0, 9, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-m", mv)
	if _, err := e.mover.Copy(ctxT(t), "cut-m", mv); !errors.Is(err, ErrSchema) {
		t.Fatalf("copy to a table without a column: %v", err)
	}
	if n := e.slotRows("b1", 0, 9); n != 0 {
		t.Errorf("%d rows written", n)
	}
}
