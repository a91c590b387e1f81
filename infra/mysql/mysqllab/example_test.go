package mysqllab_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
)

// A lab of two IDCs: write at idc-a, read at idc-b, lose idc-a and bring
// it back. (Not run by go test: it needs MariaDB; see TestLab*.)
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "lab")
	lab, err := mysqllab.Start(ctx, mysqllab.Config{Dir: dir})
	if err != nil {
		log.Fatal(err) // mysqllab.ErrNotInstalled: run scripts/tools/mariadb.sh
	}
	defer lab.Close()

	if err := lab.CreateDatabase(ctx, "pay"); err != nil {
		log.Fatal(err)
	}
	fmt.Println(lab.DSN("idc-a", "pay")) // mysql://root@127.0.0.1:PORT/pay, for infra/sqldb.Open

	lab.Kill("idc-a") // a power loss
	lab.Restart(ctx, "idc-a")
	if err := lab.WaitReady(ctx); err != nil { // replication and semi-sync back
		log.Fatal(err)
	}
	st, _ := lab.Status(ctx)
	for _, s := range st {
		fmt.Println(s.Server, s.CurrentPos, s.SemiSync.MasterOn)
	}
}
