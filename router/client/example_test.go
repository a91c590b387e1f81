package client_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"

	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// fixedSource serves one table that never changes: a stand-in for
// infra/etcdstore.Store (wrap that in a client.ContactSource in production).
type fixedSource struct{ t *router.Table }

func (s fixedSource) Load(context.Context) (*router.Table, int64, error) { return s.t, 1, nil }

func (s fixedSource) Watch(ctx context.Context, _ int64) <-chan router.Event {
	ch := make(chan router.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// Dial a service through the SDK and call it with its usual stub; each call
// goes to the cell that owns its key.
func ExampleClient_Dial() {
	// The map: a1 owns slots 0-511, b1 owns 512-1023.
	t, _ := router.NewTable(1024)
	t.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	t.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
	t.Assign(router.SlotRange{First: 0, Last: 511}, "a1")
	t.Assign(router.SlotRange{First: 512, Last: 1023}, "b1")
	t.SetEpoch(1)

	// One instance per cell serving the ledger on loopback; discovery
	// says where (infra/etcdcell registers them in etcd in production).
	disc := &router.StaticDiscovery{}
	var instances []router.Instance
	for _, cell := range []string{"a1", "b1"} {
		gs := grpc.NewServer()
		testsvc.NewServer(cell).Register(gs)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return
		}
		go gs.Serve(l)
		defer gs.Stop()
		instances = append(instances, router.Instance{Cell: cell, ID: cell + "-0", GRPCAddr: l.Addr().String()})
	}
	disc.Set(instances)

	w := router.NewWatcher(fixedSource{t.Seal()}, router.WatcherConfig{})
	if err := w.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()

	c, err := client.New(client.DefaultConfig(w, disc), nil) // nil: no metrics registry
	if err != nil {
		fmt.Println(err)
		return
	}
	cc, err := c.Dial("ledger") // grpc.NewClient("cellkit:///ledger", c.DialOptions()...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	ledger := testsvc.NewClient(cc) // the service's stub, unchanged

	for _, user := range []string{"alice", "dave", "erin"} {
		id, _ := client.NewIdempotencyKey(user) // reused by the SDK's retries
		ctx := client.WithIdempotencyKey(client.WithKey(context.Background(), user), id)
		e, err := ledger.Credit(ctx, user, 10, id)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s (slot %d) credited by cell %s\n", user, t.Slot(user), e.Cell)
	}
	// Output:
	// alice (slot 73) credited by cell a1
	// dave (slot 802) credited by cell b1
	// erin (slot 531) credited by cell b1
}
