package httpguard_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

func Example() {
	// Cell a1 owns every slot of a tiny map, except that user "vip" is
	// pinned to b1.
	tb, _ := router.NewTable(256)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	_ = tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1")
	_ = tb.SetWhitelist("vip", "b1")
	tb.SetEpoch(7)
	fence := cell.NewFence(clock.Real(), time.Second, "a1", "pod-0")
	_ = fence.Resume(time.Now(), time.Hour) // etcdcell does this after registering
	guard, _ := cell.NewGuard(cell.Config{Cell: "a1", Instance: "pod-0"}, tb.Seal(), fence)

	mw, err := httpguard.New(guard, httpguard.Config{Routes: []httpguard.Route{
		{Pattern: "POST /v1/credit/{key}", Kind: cell.Write, Key: httpguard.PathValue("key")},
		{Pattern: "GET /v1/balance/{key}", Kind: cell.Read, Key: httpguard.PathValue("key")},
	}})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(mw.Handler(testsvc.NewServer("a1").HTTPHandler()))
	defer srv.Close()

	for _, key := range []string{"alice", "vip"} {
		resp, err := http.Post(srv.URL+"/v1/credit/"+key+"?amount=5&requestId=r-"+key, "", nil)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		var wc *cell.WrongCellError
		if errors.As(wire.FromHTTP(resp), &wc) {
			fmt.Println(key, resp.StatusCode, "owner", wc.Owner, "at epoch", wc.Epoch)
			continue
		}
		fmt.Println(key, resp.StatusCode, "served by", resp.Header.Get("Cellkit-Cell"))
	}
	// Output:
	// alice 200 served by a1
	// vip 421 owner b1 at epoch 7
}
