package paycell_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
)

// testTimeout bounds every wait; tests poll, never sleep.
const testTimeout = 60 * time.Second

const slots = 1024

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var (
	etcd  etcdtest.Shared
	maria sharedLab
)

func TestMain(m *testing.M) {
	code := m.Run()
	etcd.Close()
	maria.Close()
	os.Exit(code)
}

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

// dialect is a database engine the service tests run against. Adding one
// is one entry in dialects.
type dialect struct {
	name string
	// open returns a fresh, migrated, empty database for one test.
	open func(t testing.TB) (*sql.DB, sqldb.Dialect)
}

var dialects = []dialect{
	{"sqlite", openSQLite},
	{"mariadb", openMariaDB},
}

// forEachDialect runs f as a subtest per dialect.
func forEachDialect(t *testing.T, f func(t *testing.T, d dialect)) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) { f(t, d) })
	}
}

func openSQLite(t testing.TB) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	db, d, err := sqldb.Open(ctxT(t), "sqlite:"+filepath.Join(t.TempDir(), "books.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	must(t, schema.Migrate(ctxT(t), db, d))
	return db, d
}

var mariaDBs atomic.Int64

// openMariaDB creates a database of its own on the package's one MariaDB
// server (started on first use; the test skips if MariaDB is missing).
func openMariaDB(t testing.TB) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	lab := maria.get(t)
	name := fmt.Sprintf("pay_%d", mariaDBs.Add(1))
	must(t, lab.CreateDatabase(ctxT(t), name))
	db := openMySQLDSN(t, lab.DSN("idc-a", name))
	must(t, schema.Migrate(ctxT(t), db, sqldb.MySQL))
	return db, sqldb.MySQL
}

// openMySQLDSN opens a mysql:// DSN with sqldb.
func openMySQLDSN(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, _, err := sqldb.Open(ctxT(t), dsn)
	must(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// sharedLab is one single-server MariaDB for the package: started by the
// first test that needs it, closed by TestMain.
type sharedLab struct {
	mu  sync.Mutex
	dir string
	lab *mysqllab.Lab
	err error
}

func (s *sharedLab) get(t testing.TB) *mysqllab.Lab {
	t.Helper()
	mysqllabtest.Require(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lab == nil && s.err == nil {
		s.dir, s.err = os.MkdirTemp("", "paycell-mariadb-")
		if s.err == nil {
			cfg := mysqllab.DefaultConfig(s.dir)
			cfg.Servers, cfg.Async = []string{"idc-a"}, true
			cfg.StartTimeout = mysqllabtest.StartTimeout
			ctx, cancel := context.WithTimeout(context.Background(), mysqllabtest.StartTimeout)
			s.lab, s.err = mysqllab.Start(ctx, cfg)
			cancel()
		}
	}
	if s.err != nil {
		t.Fatalf("start MariaDB: %v", s.err)
	}
	return s.lab
}

func (s *sharedLab) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lab != nil {
		s.lab.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// fakeBank records submissions (a fake of paycell's own BankChannel).
type fakeBank struct {
	mu   sync.Mutex
	ops  []string
	fail atomic.Bool
}

func (b *fakeBank) Submit(_ context.Context, opID, kind string, amount int64) error {
	if b.fail.Load() {
		return fmt.Errorf("fake bank down")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, fmt.Sprintf("%s %s %d", opID, kind, amount))
	return nil
}

func (b *fakeBank) submitted() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ops...)
}

// newService returns a service of cell "a1" over a fresh database.
func newService(t testing.TB, d dialect, edit ...func(*paycell.Config)) (*paycell.Service, *fakeBank) {
	t.Helper()
	db, dl := d.open(t)
	bank := &fakeBank{}
	cfg := paycell.Config{Cell: "a1", SlotCount: slots, DB: db, Dialect: dl, Bank: bank, Logger: quiet}
	for _, f := range edit {
		f(&cfg)
	}
	svc, err := paycell.New(cfg)
	must(t, err)
	return svc, bank
}

// fund opens owner's account and tops it up by amount (the bank says yes).
func fund(t testing.TB, api paycell.API, owner string, amount int64) {
	t.Helper()
	ctx := ctxT(t)
	_, err := api.OpenAccount(ctx, paycell.OpenRequest{Owner: owner, RequestID: "open-" + owner})
	must(t, err)
	if amount == 0 {
		return
	}
	op, err := api.TopUp(ctx, paycell.BankRequest{Owner: owner, RequestID: fmt.Sprintf("fund-%s-%d", owner, amount), Amount: amount})
	must(t, err)
	_, err = api.BankCallback(ctx, paycell.CallbackRequest{OpID: op.OpID, Status: paycell.BankSucceeded})
	must(t, err)
}

// checkBooks fails t unless the books balance.
func checkBooks(t testing.TB, svc *paycell.Service) paycell.Books {
	t.Helper()
	b, err := paycell.ReadBooks(ctxT(t), svc.DB(), svc.SlotCount())
	must(t, err)
	if !b.OK() || b.Sum != 0 || b.Balances != b.Users {
		t.Fatalf("books do not balance: %+v", b)
	}
	return b
}
