package mysql_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/router"
)

// The data gate of a cluster whose cells a1, a2 (IDC-A) and b1 (IDC-B)
// keep their books in two MariaDB servers replicating to each other.
// (Not run by go test: it needs the servers; see TestWaitData*.)
func Example() {
	mover, err := mysql.New(mysql.Config{
		Cells: map[string]mysql.Cell{
			"a1": {Server: "idc-a", DSN: "mysql://cellkit@db-a.idc-a:3306/pay"},
			"a2": {Server: "idc-a", DSN: "mysql://cellkit@db-a.idc-a:3306/pay"},
			"b1": {Server: "idc-b", DSN: "mysql://cellkit@db-b.idc-b:3306/pay"},
		},
		RequireSemiSync: true,             // RPO 0: refuse unless semi-sync is in force
		Timeout:         10 * time.Second, // per wait
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mover.Close()

	// The runner calls this after the barrier of each stage.
	stage := failover.Movement{Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: 0, Last: 127}, From: "a1", To: "b1"}}}
	desc, err := mover.WaitData(context.Background(), "drill-42", stage)
	fmt.Println(desc, err) // b1 (idc-b) reached a1's GTID 1-1-5512 in 12ms <nil>
	// runner := failover.Runner{Mover: mover, ...}
}
