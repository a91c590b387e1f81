package gateway_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/gateway"
)

func freeze(slots ...int) func(*router.Table) error {
	return func(tb *router.Table) error {
		for _, s := range slots {
			if err := tb.Freeze(router.SlotRange{First: s, Last: s}, "c1"); err != nil {
				return err
			}
		}
		return nil
	}
}

func flip(to string, slots ...int) func(*router.Table) error {
	return func(tb *router.Table) error {
		for _, s := range slots {
			r := router.SlotRange{First: s, Last: s}
			if err := tb.Assign(r, to); err != nil {
				return err
			}
			if err := tb.Unfreeze(r); err != nil {
				return err
			}
		}
		return nil
	}
}

type result struct {
	id   string
	cell string
	err  error
}

// credit sends one credit for key through the router, over HTTP or gRPC.
func (e *env) credit(proto, key, reqID string) result {
	switch proto {
	case "http":
		req, err := http.NewRequest(http.MethodPost, "http://"+e.httpAddr+"/v1/credit/"+key+"?amount=1&requestId="+reqID, http.NoBody)
		if err != nil {
			return result{id: reqID, err: err}
		}
		resp, err := e.client.Do(req)
		if err != nil {
			return result{id: reqID, err: err}
		}
		defer resp.Body.Close()
		r := e.readEntry(resp)
		return result{id: reqID, cell: r.entry.Cell, err: statusErr(r)}
	default:
		ent, err := testsvc.NewClient(e.cc).Credit(withKey(ctxT(e.t), "x-user-id", key), key, 1, reqID)
		return result{id: reqID, cell: ent.Cell, err: err}
	}
}

func statusErr(r reply) error {
	if r.status != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", r.status, r.body)
	}
	return nil
}

// A frozen slot's requests are held, then all delivered to the new owner
// after the flip: zero client errors.
func TestFrozenSlotBufferedThenFlipped(t *testing.T) {
	e := newEnv(t, testConfig())
	const slot, perProto = 5, 15
	keys := keysIn(t, slot, perProto)
	e1 := e.update("freeze slot 5", freeze(slot))
	e.waitGatewayEpoch(e1.Epoch())

	var wg sync.WaitGroup
	results := make(chan result, 2*perProto)
	for _, proto := range []string{"http", "grpc"} {
		for i, key := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- e.credit(proto, key, fmt.Sprintf("%s-%d", proto, i))
			}()
		}
	}
	eventually(t, "all requests held", func() bool { return e.metric("cellrouter_buffered_requests", nil) == 2*perProto })
	e.update("flip slot 5 to b1", flip("b1", slot))
	wg.Wait()
	close(results)

	var failed int
	for r := range results {
		if r.err != nil || r.cell != "b1" {
			failed++
			t.Errorf("request %s: served by %q, err %v; want b1", r.id, r.cell, r.err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed", failed, 2*perProto)
	}
	if got := len(e.cells["b1"].svc.Requests()); got != 2*perProto {
		t.Fatalf("b1 applied %d credits, want %d", got, 2*perProto)
	}
	if got := len(e.cells["a1"].svc.Requests()); got != 0 {
		t.Fatalf("a1 applied %d credits, want 0", got)
	}
	if got := e.metric("cellrouter_frozen_wait_seconds", map[string]string{"outcome": "released"}); got != 2*perProto {
		t.Fatalf("frozen waits released = %v, want %d", got, 2*perProto)
	}
	if got := e.metric("cellrouter_buffered_requests", nil); got != 0 {
		t.Fatalf("still buffered: %v", got)
	}
}

func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

func TestFrozenBufferOverflow(t *testing.T) {
	c := testConfig()
	c.Buffer.MaxPerSlot, c.Buffer.MaxTotal = 2, 3
	c.Buffer.RetryAfter = gateway.Duration(2 * time.Second)
	e := newEnv(t, c)
	k5, k6 := keysIn(t, 5, 4), keysIn(t, 6, 4)
	e1 := e.update("freeze", freeze(5, 6))
	e.waitGatewayEpoch(e1.Epoch())

	var wg sync.WaitGroup
	held := make(chan result, 3)
	hold := func(proto, key, id string) {
		wg.Add(1)
		go func() { defer wg.Done(); held <- e.credit(proto, key, id) }()
	}
	hold("http", k5[0], "h0")
	hold("grpc", k5[1], "h1")
	eventually(t, "two held", func() bool { return e.metric("cellrouter_buffered_requests", nil) == 2 })

	// Slot 5 is full.
	r := e.get("/v1/balance/"+k5[2], nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "2" || r.header.Get("Cellkit-Code") != "FROZEN" {
		t.Fatalf("slot overflow: %d %v %s", r.status, r.header, r.body)
	}
	_, _, err := testsvc.NewClient(e.cc).Balance(withKey(ctxT(t), "x-user-id", k5[3]), k5[3])
	if status.Code(err) != codes.Unavailable || retryInfo(err) == nil || retryInfo(err).GetRetryDelay().AsDuration() != 2*time.Second {
		t.Fatalf("gRPC slot overflow: %v (retry info %v)", err, retryInfo(err))
	}
	// Slot 6 has room, but the total does not after one more.
	hold("http", k6[0], "h2")
	eventually(t, "three held", func() bool { return e.metric("cellrouter_buffered_requests", nil) == 3 })
	if r := e.get("/v1/balance/"+k6[1], nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("total overflow: %d %s", r.status, r.body)
	}
	if got := e.metric("cellrouter_buffer_overflows_total", map[string]string{"bound": "slot"}); got != 2 {
		t.Fatalf("slot overflows = %v, want 2", got)
	}
	if got := e.metric("cellrouter_buffer_overflows_total", map[string]string{"bound": "total"}); got != 1 {
		t.Fatalf("total overflows = %v, want 1", got)
	}

	e.update("flip", flip("b1", 5, 6))
	wg.Wait()
	close(held)
	for r := range held {
		if r.err != nil || r.cell != "b1" {
			t.Errorf("held request %s: %q %v", r.id, r.cell, r.err)
		}
	}
}

func TestFrozenBufferTimeout(t *testing.T) {
	c := testConfig()
	c.Buffer.Timeout = gateway.Duration(200 * time.Millisecond)
	e := newEnv(t, c)
	key := keysIn(t, 5, 1)[0]
	e1 := e.update("freeze", freeze(5))
	e.waitGatewayEpoch(e1.Epoch())

	r := e.get("/v1/balance/"+key, nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.header.Get("Cellkit-Code") != "FROZEN" {
		t.Fatalf("timeout: %d %v %s", r.status, r.header, r.body)
	}
	_, _, err := testsvc.NewClient(e.cc).Balance(withKey(ctxT(t), "x-user-id", key), key)
	if status.Code(err) != codes.Unavailable || retryInfo(err) == nil {
		t.Fatalf("gRPC timeout: %v", err)
	}
	if got := e.metric("cellrouter_frozen_wait_seconds", map[string]string{"outcome": "timeout"}); got != 2 {
		t.Fatalf("frozen waits timed out = %v, want 2", got)
	}
	if got := e.metric("cellrouter_requests_total", map[string]string{"outcome": "buffer_timeout"}); got != 2 {
		t.Fatalf("requests{buffer_timeout} = %v, want 2", got)
	}
	if e.cells["a1"].refused.Load()+int64(len(e.cells["a1"].seen())) != 0 {
		t.Fatal("a frozen request reached the cell")
	}
}

// A guard that sees the freeze before the router answers FROZEN; the router
// catches up, holds the request, and delivers it after the flip.
func TestGuardFrozenBeforeRouter(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keysIn(t, 5, 1)[0]
	e.src.Pause()
	e1 := e.update("freeze", freeze(5))
	e.waitCellsEpoch(e1.Epoch())
	resumed := func(error) { e.src.Resume() }
	e.cells["a1"].onRefuse.Store(&resumed)

	done := make(chan result, 1)
	go func() { done <- e.credit("http", key, "r1") }()
	eventually(t, "request held after the guard's FROZEN", func() bool { return e.metric("cellrouter_buffered_requests", nil) == 1 })
	e.update("flip", flip("b1", 5))
	r := <-done
	if r.err != nil || r.cell != "b1" {
		t.Fatalf("served by %q, %v; want b1", r.cell, r.err)
	}
	if got := e.metric("cellrouter_redirects_total", map[string]string{"code": "FROZEN"}); got != 1 {
		t.Fatalf("redirects{FROZEN} = %v, want 1", got)
	}
}
