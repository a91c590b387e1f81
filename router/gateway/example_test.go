package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

// fixedSource serves one table and never changes (infra/etcdstore.Store
// is the real Source).
type fixedSource struct{ t *router.Table }

func (s fixedSource) Load(context.Context) (*router.Table, int64, error) { return s.t, 1, nil }

func (s fixedSource) Watch(ctx context.Context, _ int64) <-chan router.Event {
	ch := make(chan router.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// A gateway in front of one cell: the request's X-User-Id header is its
// key; the cell sees the router's cellkit-key and cellkit-epoch.
func Example() {
	cellA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "a1 serves key %s at epoch %s", r.Header.Get("Cellkit-Key"), r.Header.Get("Cellkit-Epoch"))
	}))
	defer cellA.Close()

	t, _ := router.NewTable(256)
	_ = t.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive})
	_ = t.Assign(router.SlotRange{First: 0, Last: 255}, "a1")
	t.SetEpoch(7)
	t.Seal()
	disc := &router.StaticDiscovery{}
	disc.Set([]router.Instance{{Cell: "a1", ID: "a1-0", HTTPAddr: cellA.Listener.Addr().String()}})

	cfg := gateway.Local()
	cfg.HTTP.Routes = []gateway.Route{{Prefix: "/", Keys: []gateway.KeySource{{Header: "X-User-Id"}}}}
	gw, err := gateway.New(cfg, gateway.Options{Source: fixedSource{t}, Discovery: disc})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := gw.Start(ctx); err != nil {
		panic(err)
	}
	defer gw.Close()
	front := httptest.NewServer(gw) // or gw.Serve(ctx, gateway.Listeners{...})
	defer front.Close()

	req, _ := http.NewRequest(http.MethodGet, front.URL+"/balance", nil)
	req.Header.Set("X-User-Id", "u42")
	req.Header.Set("Cellkit-Key", "someone-else") // stripped
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 a1 serves key u42 at epoch 7
}
