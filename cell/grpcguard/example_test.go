package grpcguard_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

func Example() {
	// Cell a1 owns every slot, except that user "vip" is pinned to b1.
	tb, _ := router.NewTable(256)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	_ = tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1")
	_ = tb.SetWhitelist("vip", "b1")
	tb.SetEpoch(7)
	fence := cell.NewFence(clock.Real(), time.Second, "a1", "pod-0")
	_ = fence.Resume(time.Now(), time.Hour) // etcdcell does this after registering
	guard, _ := cell.NewGuard(cell.Config{Cell: "a1", Instance: "pod-0"}, tb.Seal(), fence)

	icpt, err := grpcguard.New(guard, grpcguard.Config{Methods: map[string]grpcguard.Method{
		// The key is a field of the request message.
		testsvc.CreditMethod: {Kind: cell.Write, Key: func(req any) (string, error) {
			return req.(*structpb.Struct).GetFields()["key"].GetStringValue(), nil
		}},
		testsvc.BalanceMethod: {Kind: cell.Read}, // key from cellkit-key metadata
	}})
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(icpt.ServerOptions()...)
	testsvc.NewServer("a1").Register(srv)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	defer srv.Stop()
	cc, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	client := testsvc.NewClient(cc)

	for _, key := range []string{"alice", "vip"} {
		e, err := client.Credit(context.Background(), key, 5, "r-"+key)
		var wc *cell.WrongCellError
		if errors.As(wire.FromGRPC(err), &wc) {
			fmt.Println(key, "refused: owner", wc.Owner, "at epoch", wc.Epoch)
			continue
		}
		fmt.Println(key, "credited by", e.Cell, err)
	}
	// Output:
	// alice credited by a1 <nil>
	// vip refused: owner b1 at epoch 7
}
