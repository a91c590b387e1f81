package mysqllabtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
)

// StartTimeout bounds starting a lab. Generous: a cold start under -race
// on a loaded CI machine is much slower than the usual second.
const StartTimeout = 90 * time.Second

// Require skips t when MariaDB is not installed, or fails it when the CI
// environment variable is set.
func Require(t testing.TB) {
	t.Helper()
	if err := mysqllab.Installed(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: run scripts/tools/mariadb.sh (CI is set, so this test does not skip)", err)
		}
		t.Skipf("%v: run scripts/tools/mariadb.sh", err)
	}
}

// Start starts a lab in t.TempDir() (two servers, idc-a and idc-b, with
// GTID and semi-sync replication both ways, unless configure changes the
// config) and closes it when the test ends. configure may set any field
// but Dir.
func Start(t testing.TB, configure ...func(*mysqllab.Config)) *mysqllab.Lab {
	t.Helper()
	Require(t)
	cfg := mysqllab.DefaultConfig(t.TempDir())
	cfg.StartTimeout = StartTimeout
	cfg.Logf = t.Logf
	for _, f := range configure {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	lab, err := mysqllab.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start MariaDB lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close MariaDB lab: %v", err)
		}
	})
	return lab
}
