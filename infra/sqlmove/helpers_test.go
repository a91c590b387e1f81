package sqlmove

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

const (
	testSlots   = 256
	testTimeout = 2 * time.Minute
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testTables is the test schema's slot-scoped tables: text, composite and
// integer keys.
var testTables = []Table{
	{Name: "accounts", Key: []string{"owner"}},
	{Name: "orders", Key: []string{"order_id"}},
	{Name: "entries", Key: []string{"txn_id", "leg"}},
}

// schema returns the test schema. reorder lists each table's columns in
// another order (the canonical encoding must not care).
func schema(d sqldb.Dialect, reorder bool) []string {
	type col struct{ name, sqlite, mysql string }
	tables := []struct {
		name string
		cols []col
		pk   string
	}{
		{"accounts", []col{
			{"owner", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"balance", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"nickname", "TEXT", "TEXT"},
			{"avatar", "BLOB", "BLOB"},
		}, "owner"},
		{"orders", []col{
			{"order_id", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"big", "INTEGER", "BIGINT"},
			{"ratio", "REAL", "DOUBLE"},
			{"memo", "TEXT", "TEXT"},
		}, "order_id"},
		{"entries", []col{
			{"txn_id", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"leg", "INTEGER NOT NULL", "INT NOT NULL"},
			{"slot", "INTEGER NOT NULL", "INT NOT NULL"},
			{"owner", "TEXT NOT NULL", "VARCHAR(64) NOT NULL"},
			{"amount", "INTEGER NOT NULL", "BIGINT NOT NULL"},
			{"payload", "BLOB NOT NULL", "LONGBLOB NOT NULL"},
			{"settled_by", "TEXT", "VARCHAR(64)"},
		}, "txn_id, leg"},
	}
	var out []string
	for _, tb := range tables {
		cols := slices.Clone(tb.cols)
		if reorder {
			slices.Reverse(cols)
		}
		var defs []string
		for _, c := range cols {
			typ := c.sqlite
			if d == sqldb.MySQL {
				typ = c.mysql
			}
			defs = append(defs, c.name+" "+typ)
		}
		defs = append(defs, "PRIMARY KEY ("+tb.pk+")")
		if d == sqldb.MySQL {
			defs = append(defs, "KEY "+tb.name+"_slot (slot)", "KEY "+tb.name+"_owner (owner)")
			out = append(out, "CREATE TABLE "+tb.name+" ("+strings.Join(defs, ", ")+") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
			continue
		}
		out = append(out, "CREATE TABLE "+tb.name+" ("+strings.Join(defs, ", ")+")",
			"CREATE INDEX "+tb.name+"_slot ON "+tb.name+" (slot)",
			"CREATE INDEX "+tb.name+"_owner ON "+tb.name+" (owner)")
	}
	return out
}

// backend makes fresh cell databases with the test schema.
type backend struct {
	name string
	// start readies the backend for one test tree and returns a function
	// that opens a new, empty database for a cell.
	start func(t testing.TB) func(t testing.TB, cell string) DB
}

// backends are the engines every core scenario runs on.
var backends = []backend{
	{name: "sqlite", start: startSQLite},
	{name: "mariadb", start: startMariaDB},
	{name: "mixed", start: startMixed},
}

// startMixed puts b1 on MariaDB and the other cells on SQLite: the
// canonical encoding must make the engines agree, and values must
// survive the trip both ways with their types.
func startMixed(t testing.TB) func(t testing.TB, cell string) DB {
	lite, maria := startSQLite(t), startMariaDB(t)
	return func(t testing.TB, cell string) DB {
		if cell == "b1" {
			return maria(t, cell)
		}
		return lite(t, cell)
	}
}

func startSQLite(testing.TB) func(t testing.TB, cell string) DB {
	n := 0
	return func(t testing.TB, cell string) DB {
		t.Helper()
		n++
		db, d, err := sqldb.Open(ctxT(t), "sqlite:"+filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.db", cell, n)))
		must(t, err)
		t.Cleanup(func() { db.Close() })
		return createSchema(t, DB{DB: db, Dialect: d}, cell)
	}
}

// startMariaDB starts one MariaDB server (no replication: the copy mover
// is what moves rows here) and gives each cell a database of its own on it.
func startMariaDB(t testing.TB) func(t testing.TB, cell string) DB {
	lab := mysqllabtest.Start(t, func(c *mysqllab.Config) {
		c.Servers = []string{"cells"}
		c.Async = true
		c.Options = append(c.Options, "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0")
	})
	var n atomic.Int64
	return func(t testing.TB, cell string) DB {
		t.Helper()
		name := fmt.Sprintf("t%d_%s", n.Add(1), strings.ReplaceAll(cell, "-", "_"))
		must(t, lab.CreateDatabase(ctxT(t), name))
		db, dialect, err := sqldb.Open(ctxT(t), lab.DSN("cells", name))
		must(t, err)
		t.Cleanup(func() { db.Close() })
		return createSchema(t, DB{DB: db, Dialect: dialect}, cell)
	}
}

func createSchema(t testing.TB, db DB, cell string) DB {
	t.Helper()
	// b1's tables list their columns in another order.
	for _, q := range schema(db.Dialect, cell == "b1") {
		if _, err := db.DB.ExecContext(ctxT(t), q); err != nil {
			t.Fatalf("%s: %s: %v", cell, q, err)
		}
	}
	return db
}

// maps is the map the mover reads: tests change it as a runner would.
type maps struct {
	mu  sync.Mutex
	cur *router.Table
	// reads counts Table calls.
	reads atomic.Int64
}

func (m *maps) Table(context.Context) (*router.Table, error) {
	m.reads.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, nil
}

func (m *maps) get() *router.Table {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// edit changes the map, as a new epoch.
func (m *maps) edit(t testing.TB, f func(*router.Table) error) *router.Table {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.cur.Clone()
	must(t, f(c))
	c.SetEpoch(m.cur.Epoch() + 1)
	must(t, c.Validate())
	m.cur = c.Seal()
	return m.cur
}

func (m *maps) apply(t testing.TB, op failover.ChangeOp, cutover string, mv failover.Movement) *router.Table {
	t.Helper()
	return m.edit(t, failover.Change{Op: op, Cutover: cutover, Move: mv}.Apply)
}

// threeCells: a1 owns 0-99, b1 100-199, c1 200-255.
func threeCells(t testing.TB) *router.Table {
	t.Helper()
	tb, err := router.NewTable(testSlots)
	must(t, err)
	for _, c := range []struct {
		id    string
		first int
		last  int
		idc   string
	}{{"a1", 0, 99, "IDC-A"}, {"b1", 100, 199, "IDC-B"}, {"c1", 200, 255, "IDC-C"}} {
		must(t, tb.AddCell(router.Cell{ID: c.id, IDC: c.idc, State: router.StateActive}))
		must(t, tb.Assign(router.SlotRange{First: c.first, Last: c.last}, c.id))
	}
	must(t, tb.Validate())
	return tb.Seal()
}

// keyIn returns the first key prefix+N whose slot is s.
func keyIn(prefix string, s int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s%d", prefix, i); router.Slot(k, testSlots) == s {
			return k
		}
	}
}

// row is one row of the test world.
type row struct {
	table string
	cols  map[string]any
	home  string // cell-scoped rows (slot -1): their cell
}

func (r row) owner() string { return r.cols["owner"].(string) }
func (r row) slot() int     { return int(r.cols["slot"].(int64)) }

func tableOf(name string) Table {
	for _, tb := range testTables {
		if tb.Name == name {
			return tb
		}
	}
	panic("no table " + name)
}

// pk renders a row's primary key.
func pkOf(table string, cols map[string]any) string {
	var parts []string
	for _, k := range tableOf(table).Key {
		parts = append(parts, fmt.Sprint(cols[k]))
	}
	return strings.Join(parts, "|")
}

// encoded is the canonical encoding of a row's columns (sorted by name).
func encoded(t testing.TB, cols map[string]any) string {
	t.Helper()
	names := make([]string, 0, len(cols))
	for k := range cols {
		names = append(names, k)
	}
	sort.Strings(names)
	vals := make([]any, len(names))
	for i, n := range names {
		vals[i] = cols[n]
	}
	b, err := encodeRow(nil, names, vals)
	must(t, err)
	return string(b)
}

var bigs = []int64{math.MaxInt64, math.MinInt64, 0, -1, 1<<53 + 1}
var ratios = []float64{0.1, 1e300, -2.5, math.SmallestNonzeroFloat64, 3}
var texts = []string{"héllo 世界", "", "it's \"quoted\"", "back\\slash", strings.Repeat("x", 300)}

// userRows returns a user's rows: an account, up to three orders (with
// extreme integers, floats, NULLs and odd text), each with two ledger legs
// (blobs, empty blobs, NULLs). version varies the values (a stale copy).
func userRows(owner string, version int) []row {
	h := fnv.New64a()
	h.Write([]byte(owner))
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(version)))
	slot := int64(router.Slot(owner, testSlots))
	var nick, avatar any
	if rng.IntN(3) > 0 {
		nick = texts[rng.IntN(len(texts))]
	}
	switch rng.IntN(3) {
	case 0:
		avatar = []byte{}
	case 1:
		b := make([]byte, 1+rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		avatar = b
	}
	out := []row{{table: "accounts", cols: map[string]any{
		"owner": owner, "slot": slot, "balance": int64(rng.IntN(1_000_000)) + int64(version), "nickname": nick, "avatar": avatar,
	}}}
	for o := range rng.IntN(4) {
		id := fmt.Sprintf("ord-%s-%d", owner, o)
		var big, ratio, memo any
		if rng.IntN(4) > 0 {
			big = bigs[rng.IntN(len(bigs))]
		}
		if rng.IntN(4) > 0 {
			ratio = ratios[rng.IntN(len(ratios))]
		}
		if rng.IntN(2) > 0 {
			memo = texts[rng.IntN(len(texts))]
		}
		amount := int64(1 + rng.IntN(100_000))
		out = append(out, row{table: "orders", cols: map[string]any{
			"order_id": id, "slot": slot, "owner": owner, "amount": amount, "big": big, "ratio": ratio, "memo": memo,
		}})
		for leg := range 2 {
			payload := make([]byte, rng.IntN(40))
			for i := range payload {
				payload[i] = byte(rng.IntN(256))
			}
			var settled any
			if leg == 1 && rng.IntN(2) == 0 {
				settled = "batch-" + owner
			}
			amt := amount
			if leg == 1 {
				amt = -amount
			}
			out = append(out, row{table: "entries", cols: map[string]any{
				"txn_id": "txn-" + id, "leg": int64(leg), "slot": slot, "owner": owner, "amount": amt, "payload": payload, "settled_by": settled,
			}})
		}
	}
	return out
}

// cellRows are a cell's cell-scoped rows (slot -1), which never move.
func cellRows(cell string) []row {
	owner := "cell:" + cell
	var out []row
	for i := range 3 {
		id := fmt.Sprintf("settle-%s-%d", cell, i)
		out = append(out, row{table: "entries", home: cell, cols: map[string]any{
			"txn_id": id, "leg": int64(0), "slot": int64(-1), "owner": owner, "amount": int64(i), "payload": []byte{byte(i)}, "settled_by": nil,
		}}, row{table: "orders", home: cell, cols: map[string]any{
			"order_id": id, "slot": int64(-1), "owner": owner, "amount": int64(10 + i), "big": nil, "ratio": nil, "memo": "cell-scoped",
		}})
	}
	return out
}

// env is one test's cells, map, world and mover.
type env struct {
	t     testing.TB
	cells map[string]DB
	maps  *maps
	world []row
	mover *Mover
}

// newEnv opens a database per cell of tb, fills each with the rows it
// owns (users per slot, and cell-scoped rows), and builds a mover.
func newEnv(t testing.TB, open func(testing.TB, string) DB, tb *router.Table, usersPerSlot int, edit ...func(*Config)) *env {
	t.Helper()
	return newEnvFill(t, open, tb, func(int) int { return usersPerSlot }, edit...)
}

// newEnvFill is newEnv with users(slot) users in each slot.
func newEnvFill(t testing.TB, open func(testing.TB, string) DB, tb *router.Table, users func(slot int) int, edit ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, cells: map[string]DB{}, maps: &maps{cur: tb}}
	for _, c := range tb.Cells() {
		e.cells[c.ID] = open(t, c.ID)
		e.world = append(e.world, cellRows(c.ID)...)
	}
	for s := range tb.SlotCount() {
		for u := range users(s) {
			e.world = append(e.world, userRows(keyIn(fmt.Sprintf("u%d-", u), s), 0)...)
		}
	}
	for _, w := range tb.Whitelist() {
		e.world = append(e.world, userRows(w.Key, 0)...)
	}
	byCell := map[string][]row{}
	for _, r := range e.world {
		c := e.home(r, tb)
		byCell[c] = append(byCell[c], r)
	}
	for c, rows := range byCell {
		tx, err := e.cells[c].DB.BeginTx(ctxT(t), nil)
		must(t, err)
		for _, r := range rows {
			e.insertTx(tx, c, r)
		}
		must(t, tx.Commit())
	}
	cfg := DefaultConfig()
	cfg.Cells, cfg.Tables, cfg.Table, cfg.Logger = e.cells, testTables, e.maps.Table, quiet
	for _, f := range edit {
		f(&cfg)
	}
	m, err := New(cfg)
	must(t, err)
	e.mover = m
	return e
}

// home is the cell that holds r on map tb.
func (e *env) home(r row, tb *router.Table) string {
	if r.home != "" {
		return r.home
	}
	return tb.Owner(r.owner()).ID
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// insert writes r at cell.
func (e *env) insert(cell string, r row) {
	e.t.Helper()
	e.insertTx(e.cells[cell].DB, cell, r)
}

func (e *env) insertTx(db execer, cell string, r row) {
	e.t.Helper()
	names := make([]string, 0, len(r.cols))
	args := make([]any, 0, len(r.cols))
	for k := range r.cols {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, r.cols[n])
	}
	q := "INSERT INTO " + r.table + " (" + strings.Join(names, ", ") + ") VALUES (" + placeholders(len(names)) + ")"
	if _, err := db.ExecContext(ctxT(e.t), q, args...); err != nil {
		e.t.Fatalf("%s: insert %s %s: %v", cell, r.table, pkOf(r.table, r.cols), err)
	}
}

// addUser adds a user's rows to the world, at cell.
func (e *env) addUser(cell, owner string) {
	e.t.Helper()
	for _, r := range userRows(owner, 0) {
		e.world = append(e.world, r)
		e.insert(cell, r)
	}
}

// credit adds delta to owner's balance at cell, and in the world.
func (e *env) credit(cell, owner string, delta int64) {
	e.t.Helper()
	res, err := e.cells[cell].DB.ExecContext(ctxT(e.t), "UPDATE accounts SET balance = balance + ? WHERE owner = ?", delta, owner)
	must(e.t, err)
	if n, _ := res.RowsAffected(); n != 1 {
		e.t.Fatalf("credit %s at %s: %d rows", owner, cell, n)
	}
	for _, r := range e.world {
		if r.table == "accounts" && r.owner() == owner {
			r.cols["balance"] = r.cols["balance"].(int64) + delta
		}
	}
}

// addStale writes a stale version of owner's rows at cell: garbage a
// past move left behind, which must never be copied over live rows.
func (e *env) addStale(cell, owner string) {
	e.t.Helper()
	for _, r := range userRows(owner, 7) {
		e.insert(cell, r)
	}
}

// dump reads every row of every test table at cell: table → pk → encoding.
func (e *env) dump(cell string) map[string]map[string]string {
	e.t.Helper()
	out := map[string]map[string]string{}
	db := e.cells[cell]
	for _, tb := range testTables {
		out[tb.Name] = map[string]string{}
		rows, err := db.DB.QueryContext(ctxT(e.t), "SELECT * FROM "+tb.Name)
		must(e.t, err)
		names, err := rows.Columns()
		must(e.t, err)
		rows.Close()
		sort.Strings(names)
		err = scanRows(ctxT(e.t), db, "SELECT "+strings.Join(names, ", ")+" FROM "+tb.Name, nil, func(vals []any) error {
			cols := map[string]any{}
			for i, n := range names {
				cols[n] = vals[i]
			}
			out[tb.Name][pkOf(tb.Name, cols)] = encoded(e.t, cols)
			return nil
		})
		must(e.t, err)
	}
	return out
}

// check verifies the world on map tb: every row is at the cell that owns
// it, unchanged. With exact, it is nowhere else and no cell holds any
// other row (the sources are pruned).
func (e *env) check(tb *router.Table, exact bool) {
	e.t.Helper()
	dumps := map[string]map[string]map[string]string{}
	for c := range e.cells {
		dumps[c] = e.dump(c)
	}
	bad := 0
	fail := func(format string, args ...any) {
		e.t.Helper()
		if bad++; bad <= 10 {
			e.t.Errorf(format, args...)
		}
	}
	want := map[string]map[string]map[string]bool{} // cell → table → pk
	for _, r := range e.world {
		cell := e.home(r, tb)
		pk := pkOf(r.table, r.cols)
		got, ok := dumps[cell][r.table][pk]
		switch {
		case !ok:
			fail("%s %s (owner %s, slot %d) missing at its owner %s", r.table, pk, r.cols["owner"], r.cols["slot"], cell)
		case got != encoded(e.t, r.cols):
			fail("%s %s (owner %s) at %s differs from what was written", r.table, pk, r.cols["owner"], cell)
		}
		if want[cell] == nil {
			want[cell] = map[string]map[string]bool{}
		}
		if want[cell][r.table] == nil {
			want[cell][r.table] = map[string]bool{}
		}
		want[cell][r.table][pk] = true
	}
	if !exact {
		return
	}
	for cell, tables := range dumps {
		for table, rows := range tables {
			for pk := range rows {
				if !want[cell][table][pk] {
					fail("%s %s at %s: a row the cell does not own (a copy left behind)", table, pk, cell)
				}
			}
		}
	}
	if bad > 10 {
		e.t.Errorf("... %d problems in all", bad)
	}
}

// rowsOf counts owner's rows at cell, all tables.
func (e *env) rowsOf(cell, owner string) int {
	e.t.Helper()
	n := 0
	for _, tb := range testTables {
		var k int
		must(e.t, e.cells[cell].DB.QueryRowContext(ctxT(e.t), "SELECT COUNT(*) FROM "+tb.Name+" WHERE owner = ?", owner).Scan(&k))
		n += k
	}
	return n
}

// slotRows counts the rows of slots [first, last] at cell, all tables.
func (e *env) slotRows(cell string, first, last int) int {
	e.t.Helper()
	n := 0
	for _, tb := range testTables {
		var k int
		must(e.t, e.cells[cell].DB.QueryRowContext(ctxT(e.t), "SELECT COUNT(*) FROM "+tb.Name+" WHERE slot BETWEEN ? AND ?", first, last).Scan(&k))
		n += k
	}
	return n
}

// entry returns the journal entry of cutover from→to.
func (e *env) entry(cutover, from, to string) Entry {
	e.t.Helper()
	es, err := e.mover.Journal(ctxT(e.t))
	must(e.t, err)
	for _, en := range es {
		if en.Cutover == cutover && en.From == from && en.To == to {
			return en
		}
	}
	e.t.Fatalf("no journal entry %s %s→%s in %+v", cutover, from, to, es)
	return Entry{}
}

func slots(first, last int, from, to string) failover.Movement {
	return failover.Movement{Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: first, Last: last}, From: from, To: to}}}
}

func keys(from, to string, ks ...string) failover.Movement {
	var m failover.Movement
	for _, k := range ks {
		m.Keys = append(m.Keys, failover.KeyMove{Key: k, From: from, To: to})
	}
	return m
}

// moveAndPrune freezes mv, copies, flips and prunes, as a runner would.
func (e *env) moveAndPrune(cutover string, mv failover.Movement) (*CopyReport, *PruneReport) {
	e.t.Helper()
	e.maps.apply(e.t, failover.OpFreeze, cutover, mv)
	cr, err := e.mover.Copy(ctxT(e.t), cutover, mv)
	must(e.t, err)
	tb := e.maps.apply(e.t, failover.OpFlip, cutover, mv)
	pr, err := e.mover.PruneAll(ctxT(e.t), tb)
	must(e.t, err)
	return cr, pr
}
