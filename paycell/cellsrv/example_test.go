package cellsrv_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/cellsrv"
	"github.com/cellkit/cellkit/router"
)

func Example() {
	dir, err := os.MkdirTemp("", "cellsrv-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// An embedded etcd holding a map where cell a1 owns every slot.
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(filepath.Join(dir, "etcd")))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	cli, err := etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: srv.Endpoints()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	store, _ := etcdstore.New(cli, etcdstore.Config{Cluster: "demo"})
	tb, _ := router.NewTable(1024)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 1023}, "a1")
	if _, err := store.Create(ctx, "example", tb); err != nil {
		log.Fatal(err)
	}

	// One paycell instance of a1: SQLite books, HTTP API, no bank.
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	cell, err := cellsrv.NewCell(ctx, cellsrv.Config{
		Cluster: "demo", Cell: "a1", Instance: "a1-0", Etcd: cli,
		DSN: "sqlite:" + filepath.Join(dir, "a1.db"), HTTP: lis,
		Logger: quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cell.Close()

	api := paycell.NewClient("http://"+cell.HTTPAddr(), nil)
	acct, err := api.OpenAccount(ctx, paycell.OpenRequest{Owner: "u-1", RequestID: "open-1"})
	fmt.Println(acct.Owner, acct.Balance, acct.Cell, err)
	fmt.Println("slot count from the map:", cell.Service().SlotCount())
	// Output:
	// u-1 0 a1 <nil>
	// slot count from the map: 1024
}
