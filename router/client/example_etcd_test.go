package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// The whole path as in production (docs/sdk.md): the map in etcd, one
// guarded ledger instance per cell registered in etcd by infra/etcdcell, and
// an app that finds them with etcdcell.NewDiscovery, follows the map through
// a ContactSource and pays orders by their slot-bearing order IDs. An
// embedded etcd stands in for the production cluster.
func Example_etcd() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "sdk-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	// --- both sides: etcd and the map ---
	cli, err := etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: srv.Endpoints()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	store, err := etcdstore.New(cli, etcdstore.Config{Cluster: "demo", Actor: "example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	// `cellctl map init` does this in production: a1 owns slots 0-511,
	// b1 owns 512-1023.
	t, _ := router.NewTable(1024)
	_ = t.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	_ = t.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
	_ = t.Assign(router.SlotRange{First: 0, Last: 511}, "a1")
	_ = t.Assign(router.SlotRange{First: 512, Last: 1023}, "b1")
	if _, err := store.Create(ctx, "bootstrap", t); err != nil {
		fmt.Println(err)
		return
	}

	// --- the service owners' side: a guarded ledger instance per cell ---
	for _, cellID := range []string{"a1", "b1"} {
		stop, err := serveLedger(ctx, cli, cellID)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer stop()
	}

	// --- the app's side ---
	disc, err := etcdcell.NewDiscovery(ctx, cli, "demo", quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer disc.Close()
	src := client.NewContactSource(store, client.ContactConfig{})
	defer src.Wait() // after the watcher closed
	w := router.NewWatcher(src, router.WatcherConfig{})
	if err := w.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	cfg := client.DefaultConfig(w, disc)
	cfg.Contact = src
	cfg.IsWrite = func(method string) bool { return method == testsvc.CreditMethod }
	c, err := client.New(cfg, nil) // prometheus.DefaultRegisterer in a real app
	if err != nil {
		fmt.Println(err)
		return
	}
	cc, err := c.Dial("ledger") // "cellkit:///ledger"
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	ledger := testsvc.NewClient(cc)

	for _, user := range []string{"alice", "dave"} {
		// An order ID minted for the user routes to the user's cell
		// wherever it travels: a bank callback that knows only the
		// order ID needs no lookup.
		orderID, err := router.NewID("ord", user)
		if err != nil {
			fmt.Println(err)
			return
		}
		idem, err := client.NewIdempotencyKey(orderID) // one per payment, kept across retries
		if err != nil {
			fmt.Println(err)
			return
		}
		callCtx := client.WithIdempotencyKey(client.WithKey(ctx, orderID), idem)
		e, err := ledger.Credit(callCtx, orderID, 10, idem)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("order of %s paid in cell %s (%s's cell: %s)\n", user, e.Cell, user, t.Owner(user).ID)
	}
	// Output:
	// order of alice paid in cell a1 (alice's cell: a1)
	// order of dave paid in cell b1 (dave's cell: b1)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serveLedger registers an instance of cellID in etcd and serves the ledger
// behind its guard on loopback. stop stops serving, then closes the
// instance (which drops its endpoint and ack from etcd).
func serveLedger(ctx context.Context, cli *clientv3.Client, cellID string) (stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	icfg := etcdcell.DefaultConfig(cellID, cellID+"-0")
	icfg.Cluster, icfg.GRPCAddr, icfg.Logger = "demo", lis.Addr().String(), quiet
	inst, err := etcdcell.Register(ctx, cli, icfg)
	if err != nil {
		lis.Close()
		return nil, err
	}
	icpt, err := grpcguard.New(inst.Guard(), grpcguard.Config{Methods: map[string]grpcguard.Method{
		// The key the handler acts on: the request's "key" field.
		testsvc.CreditMethod: {Kind: cell.Write, Key: func(req any) (string, error) {
			return req.(*structpb.Struct).GetFields()["key"].GetStringValue(), nil
		}},
		// Reads: the cellkit-key metadata the SDK stamps.
		testsvc.BalanceMethod:   {Kind: cell.Read},
		testsvc.StatementMethod: {Kind: cell.Read},
	}})
	if err != nil {
		inst.Close()
		lis.Close()
		return nil, err
	}
	gs := grpc.NewServer(icpt.ServerOptions()...)
	testsvc.NewServer(cellID).Register(gs)
	go gs.Serve(lis)
	return func() {
		gs.GracefulStop()
		inst.Close()
	}, nil
}
