// Package mysqllabtest gives tests a MariaDB replication lab
// (infra/mysql/mysqllab) the same way everywhere: started in t.TempDir(),
// logging to t.Logf, closed with t.Cleanup.
//
//	func TestBooks(t *testing.T) {
//		lab := mysqllabtest.Start(t)
//		ctx := context.Background()
//		if err := lab.CreateDatabase(ctx, "pay"); err != nil {
//			t.Fatal(err)
//		}
//		db, _, err := sqldb.Open(ctx, lab.DSN("idc-a", "pay"))
//		...
//	}
//
// When MariaDB is not installed the test is skipped, except under CI (the
// CI environment variable set), where it fails: a test that skips in CI
// proves nothing. scripts/tools/mariadb.sh installs MariaDB.
//
// It is a normal package, not a _test.go file, so that tests of other
// packages can import it; only tests should.
package mysqllabtest
