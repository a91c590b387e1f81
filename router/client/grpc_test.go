package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

func TestCallsLandOnOwnerRoundRobinWithinCell(t *testing.T) {
	tb := baseMap(t, "a1", "b1", "c1")
	cl := startCluster(t, tb, 3, "a1", "b1", "c1")
	s := newSDK(t, tb, cl.disc, nil)
	ledger := s.dial(t)
	ctx := ctxT(t)

	for _, c := range []string{"a1", "b1", "c1"} {
		for _, k := range keysOf(t, tb, c, 5) {
			id, err := client.NewIdempotencyKey(k)
			must(t, err)
			e, err := ledger.Credit(client.WithIdempotencyKey(client.WithKey(ctx, k), id), k, 1, id)
			if err != nil {
				t.Fatalf("credit %s: %v", k, err)
			}
			if e.Cell != c {
				t.Fatalf("key %s owned by %s was served by %s", k, c, e.Cell)
			}
			if _, served, err := ledger.Balance(client.WithKey(ctx, k), k); err != nil || served != c {
				t.Fatalf("balance %s: served by %q, %v", k, served, err)
			}
			// What the guard saw: the key, the client's epoch, and on the
			// write the idempotency key.
			for _, a := range cl.attempts(k) {
				if a.Epoch != 1 || a.Code != "" || (a.Method == "/cellkit.testsvc.v1.Ledger/Credit") != (a.Idem == id) {
					t.Fatalf("attempt %+v (want epoch 1, admitted, idempotency key %s on the write only)", a, id)
				}
			}
		}
	}

	// Round-robin within a cell: once every instance of b1 is connected,
	// consecutive calls spread evenly.
	k := keysOf(t, tb, "b1", 1)[0]
	bs := cl.instancesOf("b1")
	waitFor(t, "every b1 instance to serve", func() bool {
		if _, _, err := ledger.Balance(client.WithKey(ctx, k), k); err != nil {
			t.Fatal(err)
		}
		for _, in := range bs {
			if len(in.seen()) == 0 {
				return false
			}
		}
		return true
	})
	before := map[string]int{}
	for _, in := range bs {
		before[in.id] = len(in.seen())
	}
	const rounds = 10
	for range rounds * len(bs) {
		if _, _, err := ledger.Balance(client.WithKey(ctx, k), k); err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range bs {
		if got := len(in.seen()) - before[in.id]; got != rounds {
			t.Fatalf("instance %s served %d of %d calls, want %d each", in.id, got, rounds*len(bs), rounds)
		}
	}
	if got := s.requests("b1", "ok"); got < rounds*3 {
		t.Fatalf("requests_total{b1,ok} = %v", got)
	}
	if got := metricValue(s.reg, "cellkit_client_map_epoch", nil); got != 1 {
		t.Fatalf("map_epoch = %v", got)
	}
}

func TestNoKeyIsRefusedBeforeSending(t *testing.T) {
	tb := baseMap(t, "a1", "b1")
	cl := startCluster(t, tb, 1, "a1", "b1")
	s := newSDK(t, tb, cl.disc, nil)
	ledger := s.dial(t)
	_, err := ledger.Credit(ctxT(t), "u1", 1, "r1")
	if !errors.Is(err, client.ErrNoKey) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("call without a key: %v (code %v), want ErrNoKey / InvalidArgument", err, status.Code(err))
	}
	_, err = ledger.Statement(ctxT(t), "u1")
	if !errors.Is(err, client.ErrNoKey) {
		t.Fatalf("stream without a key: %v", err)
	}
	for _, in := range cl.insts {
		if n := len(in.seen()); n != 0 {
			t.Fatalf("instance %s saw %d requests", in.id, n)
		}
	}
}

// A client whose map is behind the guards' is refused with WRONG_CELL, waits
// for its watcher to reach the refusal's epoch and retries once on the new
// owner: the callers see no error.
func TestStaleClientRecoversFromWrongCell(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	keys := keysOf(t, tb1, "a1", 8)
	tb2 := tb1
	for _, k := range keys {
		tb2 = moveSlot(t, tb2, k, "b1")
	}
	cl := startCluster(t, tb2, 2, "a1", "b1") // the guards know
	s := newSDK(t, tb1, cl.disc, nil)         // the client does not, yet
	ledger := s.dial(t)
	ctx := ctxT(t)

	// Publish the new map to the client once a guard has refused it.
	go func() {
		waitFor(t, "a WRONG_CELL refusal", func() bool { return s.requests("a1", "wrong_cell") >= 1 })
		s.src.Set(tb2)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, _ := client.NewIdempotencyKey(k)
			e, err := ledger.Credit(client.WithIdempotencyKey(client.WithKey(ctx, k), id), k, 5, id)
			switch {
			case err != nil:
				errs <- fmt.Errorf("credit %s: %w", k, err)
			case e.Cell != "b1":
				errs <- fmt.Errorf("credit %s served by %s, want b1", k, e.Cell)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, k := range keys {
		if b := cl.books["b1"].Balance(k); b != 5 {
			t.Errorf("b1 balance of %s = %v, want 5 (applied once)", k, b)
		}
		if b := cl.books["a1"].Balance(k); b != 0 {
			t.Errorf("a1 applied a write for %s", k)
		}
	}
	if got := metricValue(s.reg, "cellkit_client_redirects_total", map[string]string{"reason": "wrong_cell"}); got < 1 {
		t.Fatalf("redirects_total{wrong_cell} = %v", got)
	}
}

// When the client's map does not catch up within RedirectWait, the retry
// goes to the owner the refusal named, stamped with the refusal's epoch.
func TestWrongCellHintWhenMapDoesNotCatchUp(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := moveSlot(t, tb1, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, func(c *client.Config) { c.Retry.RedirectWait = 20 * time.Millisecond })
	ledger := s.dial(t)
	_, served, err := ledger.Balance(client.WithKey(ctxT(t), k), k)
	if err != nil || served != "b1" {
		t.Fatalf("balance: served by %q, %v", served, err)
	}
	at := cl.attempts(k)
	if len(at) != 2 || at[0].Code != cell.CodeWrongCell || at[1].Instance != "b1-0" || at[1].Epoch != 2 {
		t.Fatalf("attempts %+v, want a WRONG_CELL then b1 at epoch 2", at)
	}
	// With redirects off, the refusal reaches the caller, typed.
	s2 := newSDK(t, tb1, cl.disc, func(c *client.Config) { c.Retry.MaxRedirects = -1 })
	_, _, err = s2.dial(t).Balance(client.WithKey(ctxT(t), k), k)
	var wc *cell.WrongCellError
	if !errors.As(err, &wc) || wc.Owner != "b1" || wc.Epoch != 2 || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("err %v (code %v), want *cell.WrongCellError{Owner: b1, Epoch: 2}", err, status.Code(err))
	}
}

// A write for a key the client's table shows frozen waits for the flip and
// then goes to the new owner.
func TestFrozenKeyWaitsForFlip(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := freezeSlot(t, tb1, k)
	tb3 := moveSlot(t, tb2, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb2, cl.disc, nil)
	ledger := s.dial(t)
	ctx := ctxT(t)

	type res struct {
		cell string
		err  error
	}
	done := make(chan res, 1)
	go func() {
		e, err := ledger.Credit(client.WithKey(ctx, k), k, 7, "r-frozen")
		done <- res{e.Cell, err}
	}()
	waitFor(t, "the call to wait for the flip", func() bool {
		return metricValue(s.reg, "cellkit_client_frozen_waiting", nil) == 1
	})
	if n := len(cl.attempts(k)); n != 0 {
		t.Fatalf("a write for a frozen key was sent (%d attempts)", n)
	}
	// Reads are still served by the owner while frozen.
	if _, served, err := ledger.Balance(client.WithKey(ctx, k), k); err != nil || served != "a1" {
		t.Fatalf("read while frozen: served by %q, %v", served, err)
	}
	cl.apply(tb3)
	s.src.Set(tb3)
	r := <-done
	if r.err != nil || r.cell != "b1" {
		t.Fatalf("after the flip: served by %q, %v", r.cell, r.err)
	}
	if got := metricValue(s.reg, "cellkit_client_frozen_waits_total", map[string]string{"outcome": "flipped"}); got != 1 {
		t.Fatalf("frozen_waits_total{flipped} = %v", got)
	}
	if got := metricValue(s.reg, "cellkit_client_frozen_wait_seconds", nil); got != 1 {
		t.Fatalf("frozen_wait_seconds count = %v", got)
	}
}

// A guard's FROZEN (the client did not know yet) makes the call wait for the
// flip, then it goes to the new owner.
func TestFrozenRefusalWaitsForFlip(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := freezeSlot(t, tb1, k)
	tb3 := moveSlot(t, tb2, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, nil)
	ledger := s.dial(t)
	ctx := ctxT(t)
	id, _ := client.NewIdempotencyKey(k)

	done := make(chan error, 1)
	go func() {
		e, err := ledger.Credit(client.WithIdempotencyKey(client.WithKey(ctx, k), id), k, 7, id)
		if err == nil && e.Cell != "b1" {
			err = fmt.Errorf("served by %s", e.Cell)
		}
		done <- err
	}()
	waitFor(t, "a FROZEN refusal and a wait", func() bool {
		return metricValue(s.reg, "cellkit_client_frozen_waiting", nil) == 1
	})
	cl.apply(tb3)
	s.src.Set(tb3)
	must(t, <-done)
	at := cl.attempts(k)
	if len(at) != 2 || at[0].Code != cell.CodeFrozen || at[1].Code != "" || at[0].Idem != id || at[1].Idem != id {
		t.Fatalf("attempts %+v, want FROZEN then admitted, same idempotency key", at)
	}
}

func TestFrozenPastDeadlineFailsTyped(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := freezeSlot(t, tb1, k)
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb2, cl.disc, nil)
	ledger := s.dial(t)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := ledger.Credit(client.WithKey(ctx, k), k, 1, "r1")
	var fw *client.FrozenWaitError
	if !errors.As(err, &fw) || !errors.Is(err, cell.ErrFrozen) || !errors.Is(err, context.DeadlineExceeded) ||
		status.Code(err) != codes.DeadlineExceeded || fw.Key != k || fw.Epoch != 2 {
		t.Fatalf("err %v (code %v), want *FrozenWaitError for %s at epoch 2, DeadlineExceeded", err, status.Code(err), k)
	}
	// Bounded by FrozenWait as well as by the deadline.
	s2 := newSDK(t, tb2, cl.disc, func(c *client.Config) {
		c.Retry.FrozenWait = 10 * time.Millisecond
		c.Retry.StaleMapBackoff = time.Millisecond
	})
	_, err = s2.dial(t).Credit(client.WithKey(ctxT(t), k), k, 1, "r2")
	if !errors.Is(err, client.ErrFrozenWaitExceeded) || status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want ErrFrozenWaitExceeded / Unavailable", err)
	}
	if n := len(cl.attempts(k)); n != 0 {
		t.Fatalf("%d attempts reached a cell", n)
	}
}

// A retried write carries the same idempotency key, so it is applied once:
// the owner applies the first attempt but its answer is replaced by a
// STALE_MAP refusal (a fault), the SDK retries, the service deduplicates.
func TestRetriedWriteAppliedOnce(t *testing.T) {
	tb := baseMap(t, "a1", "b1")
	k := keysOf(t, tb, "a1", 1)[0]
	cl := startCluster(t, tb, 2, "a1", "b1")
	s := newSDK(t, tb, cl.disc, nil)
	ledger := s.dial(t)
	var once sync.Once
	fault := func(method string) error {
		var err error
		once.Do(func() { err = &cell.StaleMapError{Have: 1, Want: 1, RetryAfter: time.Millisecond} })
		return err
	}
	for _, in := range cl.instancesOf("a1") {
		in.fault.Store(&fault)
	}

	seen := map[string]bool{}
	for _, explicit := range []bool{true, false} {
		once = sync.Once{}
		ctx := client.WithKey(ctxT(t), k)
		reqID := fmt.Sprintf("app-%v", explicit)
		if explicit {
			id, err := client.NewIdempotencyKey(k)
			must(t, err)
			ctx, reqID = client.WithIdempotencyKey(ctx, id), id
		}
		before := cl.books["a1"].Balance(k)
		e, err := ledger.Credit(ctx, k, 10, reqID)
		if err != nil || e.Cell != "a1" {
			t.Fatalf("credit: %+v, %v", e, err)
		}
		if got := cl.books["a1"].Balance(k) - before; got != 10 {
			t.Fatalf("balance grew by %v, want 10 (applied once)", got)
		}
		if _, ok := cl.books["a1"].Requests()[reqID]; !ok {
			t.Fatalf("request %s not recorded", reqID)
		}
		count := map[string]int{}
		for _, a := range cl.attempts(k) {
			if a.Method == "/cellkit.testsvc.v1.Ledger/Credit" && !seen[a.Idem] {
				count[a.Idem]++
			}
		}
		var idems []string
		for id, n := range count {
			if n != 2 || id == "" || (explicit && id != reqID) {
				t.Fatalf("attempts carried idempotency keys %v, want one key twice", count)
			}
			idems = append(idems, id)
			seen[id] = true
		}
		if len(idems) != 1 {
			t.Fatalf("attempts carried idempotency keys %v, want one key twice", count)
		}
		if _, err := router.ParseID(idems[0]); err != nil {
			t.Fatalf("idempotency key %q: %v", idems[0], err)
		}
	}
	if got := metricValue(s.reg, "cellkit_client_redirects_total", map[string]string{"reason": "stale_map"}); got != 2 {
		t.Fatalf("redirects_total{stale_map} = %v, want 2", got)
	}
	if n := len(cl.books["a1"].Requests()); n != 2 {
		t.Fatalf("a1 applied %d requests, want 2", n)
	}
}

func TestBreakerOpensForDeadCellOthersUnaffected(t *testing.T) {
	tb := baseMap(t, "a1", "b1")
	cl := startCluster(t, tb, 1, "a1")
	// b1's instances are gone: nothing listens on their addresses.
	list, _ := cl.disc.Instances()
	list = append(list, router.Instance{Cell: "b1", ID: "b1-0", GRPCAddr: deadAddr(t)}, router.Instance{Cell: "b1", ID: "b1-1", GRPCAddr: deadAddr(t)})
	cl.disc.Set(list)
	s := newSDK(t, tb, cl.disc, func(c *client.Config) { c.Breaker.ConsecutiveFailures = 3; c.Breaker.OpenTimeout = time.Hour })
	ledger := s.dial(t)
	ctx := ctxT(t)
	ka, kb := keysOf(t, tb, "a1", 1)[0], keysOf(t, tb, "b1", 1)[0]

	for i := range 3 {
		_, _, err := ledger.Balance(client.WithKey(ctx, kb), kb)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d to dead b1: %v, want Unavailable", i, err)
		}
		if _, served, err := ledger.Balance(client.WithKey(ctx, ka), ka); err != nil || served != "a1" {
			t.Fatalf("a1 call: %q %v", served, err)
		}
	}
	if st := s.c.BreakerState("b1"); st != gobreaker.StateOpen {
		t.Fatalf("b1 breaker %v, want open", st)
	}
	_, _, err := ledger.Balance(client.WithKey(ctx, kb), kb)
	var cu *client.CellUnavailableError
	if !errors.As(err, &cu) || cu.Cell != "b1" || !errors.Is(err, gobreaker.ErrOpenState) || status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want *CellUnavailableError{b1} (breaker open)", err)
	}
	if _, served, err := ledger.Balance(client.WithKey(ctx, ka), ka); err != nil || served != "a1" {
		t.Fatalf("a1 call with b1 open: %q %v", served, err)
	}
	if got := metricValue(s.reg, "cellkit_client_breaker_state", map[string]string{"cell": "b1"}); got != 2 {
		t.Fatalf("breaker_state{b1} = %v, want 2", got)
	}
	if got := metricValue(s.reg, "cellkit_client_breaker_state", map[string]string{"cell": "a1"}); got != 0 {
		t.Fatalf("breaker_state{a1} = %v, want 0", got)
	}
	if s.requests("b1", "failure") != 3 || s.requests("b1", "breaker_open") != 1 {
		t.Fatalf("b1 failure=%v breaker_open=%v", s.requests("b1", "failure"), s.requests("b1", "breaker_open"))
	}
}

// Guard refusals prove the cell is alive: they never open its breaker.
func TestRefusalsAreNotBreakerFailures(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := moveSlot(t, tb1, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, func(c *client.Config) { c.Retry.MaxRedirects = -1; c.Breaker.ConsecutiveFailures = 1 })
	ledger := s.dial(t)
	for range 3 {
		if _, _, err := ledger.Balance(client.WithKey(ctxT(t), k), k); !errors.Is(err, cell.ErrWrongCell) {
			t.Fatalf("err %v, want WRONG_CELL", err)
		}
	}
	if st := s.c.BreakerState("a1"); st != gobreaker.StateClosed {
		t.Fatalf("a1 breaker %v after refusals, want closed", st)
	}
}

// A stream the guard refuses before its first response is re-opened on the
// new owner and its request replayed.
func TestStreamRetriedOnNewOwner(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := moveSlot(t, tb1, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	for i := range 3 {
		_, err := cl.books["b1"].Credit(k, 1, fmt.Sprint("seed-", i))
		must(t, err)
	}
	s := newSDK(t, tb1, cl.disc, func(c *client.Config) { c.Retry.RedirectWait = 10 * time.Millisecond })
	entries, err := s.dial(t).Statement(client.WithKey(ctxT(t), k), k)
	if err != nil || len(entries) != 3 || entries[0].Cell != "b1" {
		t.Fatalf("statement: %+v, %v", entries, err)
	}
	at := cl.attempts(k)
	if len(at) != 2 || at[0].Code != cell.CodeWrongCell || at[1].Code != "" {
		t.Fatalf("attempts %+v", at)
	}
}

// The picker never chooses another cell: with the owner unreachable and
// wait-for-ready, the call waits; when the map moves the key, it follows.
func TestWaitingPickFollowsMapChange(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "b1", 1)[0]
	tb2 := moveSlot(t, tb1, k, "a1")
	cl := startCluster(t, tb2, 1, "a1")
	list, _ := cl.disc.Instances()
	cl.disc.Set(append(list, router.Instance{Cell: "b1", ID: "b1-0", GRPCAddr: deadAddr(t)}))
	s := newSDK(t, tb1, cl.disc, nil)
	ledger := s.dial(t)
	done := make(chan error, 1)
	go func() {
		_, served, err := ledger.Balance(client.WithKey(ctxT(t), k), k, grpcWaitForReady())
		if err == nil && served != "a1" {
			err = fmt.Errorf("served by %s", served)
		}
		done <- err
	}()
	// Once the call waits for b1, move the key.
	waitFor(t, "the call to wait for b1", func() bool {
		return metricValue(s.reg, "cellkit_client_inflight", map[string]string{"cell": "b1"}) == 1
	})
	s.src.Set(tb2)
	must(t, <-done)
	if n := len(cl.attempts(k)); n != 1 {
		t.Fatalf("%d attempts, want 1 (on a1)", n)
	}
	if got := s.requests("b1", "rerouted"); got != 1 {
		t.Fatalf("requests_total{b1,rerouted} = %v, want 1", got)
	}
}
