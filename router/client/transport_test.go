package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// keyFromPath routes /v1/credit/{key} and /v1/balance/{key} by their key.
func keyFromPath(r *http.Request) (string, error) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 {
		return "", fmt.Errorf("no key in %s", r.URL.Path)
	}
	return parts[2], nil
}

// httpClient returns an http.Client over the SDK's Transport; its
// connections close with the test.
func (s *sdk) httpClient(t *testing.T) *http.Client {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: &client.Transport{Client: s.c, Base: base, Key: keyFromPath}}
}

func credit(ctx context.Context, hc *http.Client, key string, amount int, reqID string) (testsvc.Entry, *http.Response, error) {
	u := fmt.Sprintf("http://ledger/v1/credit/%s?amount=%d&requestId=%s", key, amount, url.QueryEscape(reqID))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader("{}"))
	if err != nil {
		return testsvc.Entry{}, nil, err
	}
	return do(hc, req)
}

func balance(ctx context.Context, hc *http.Client, key string) (testsvc.Entry, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ledger/v1/balance/"+key, nil)
	if err != nil {
		return testsvc.Entry{}, nil, err
	}
	return do(hc, req)
}

func do(hc *http.Client, req *http.Request) (testsvc.Entry, *http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return testsvc.Entry{}, nil, err
	}
	defer resp.Body.Close()
	var e testsvc.Entry
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return e, resp, fmt.Errorf("status %s", resp.Status)
	}
	return e, resp, json.NewDecoder(resp.Body).Decode(&e)
}

func TestTransportRoutesToOwnerRoundRobin(t *testing.T) {
	tb := baseMap(t, "a1", "b1", "c1")
	cl := startCluster(t, tb, 2, "a1", "b1", "c1")
	s := newSDK(t, tb, cl.disc, nil)
	hc := s.httpClient(t)
	ctx := ctxT(t)
	for _, c := range []string{"a1", "b1", "c1"} {
		for i, k := range keysOf(t, tb, c, 4) {
			e, _, err := credit(ctx, hc, k, 2, fmt.Sprint("r", i))
			if err != nil || e.Cell != c {
				t.Fatalf("credit %s (owner %s): served by %q, %v", k, c, e.Cell, err)
			}
			at := cl.attempts(k)
			if len(at) != 1 || at[0].Epoch != 1 || at[0].Idem == "" {
				t.Fatalf("attempts %+v, want one at epoch 1 with an idempotency key", at)
			}
		}
	}
	k := keysOf(t, tb, "c1", 1)[0]
	cs := cl.instancesOf("c1")
	before := map[string]int{}
	for _, in := range cs {
		before[in.id] = len(in.seen())
	}
	for range 10 {
		if e, _, err := balance(ctx, hc, k); err != nil || e.Cell != "c1" {
			t.Fatalf("balance: %q %v", e.Cell, err)
		}
	}
	for _, in := range cs {
		if got := len(in.seen()) - before[in.id]; got != 5 {
			t.Fatalf("instance %s served %d of 10, want 5", in.id, got)
		}
		for _, a := range in.seen()[before[in.id]:] {
			if a.Idem != "" {
				t.Fatalf("a GET carried an idempotency key: %+v", a)
			}
		}
	}
	// No key: a typed error, nothing sent.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://ledger/healthz", nil)
	if _, err := hc.Do(req); !errors.Is(err, client.ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
}

func TestTransportStaleClientRecoversFromWrongCell(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	keys := keysOf(t, tb1, "a1", 6)
	tb2 := tb1
	for _, k := range keys {
		tb2 = moveSlot(t, tb2, k, "b1")
	}
	cl := startCluster(t, tb2, 2, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, nil)
	hc := s.httpClient(t)
	ctx := ctxT(t)
	go func() {
		waitFor(t, "a 421", func() bool { return s.requests("a1", "wrong_cell") >= 1 })
		s.src.Set(tb2)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, _ := client.NewIdempotencyKey(k)
			e, _, err := credit(client.WithIdempotencyKey(ctx, id), hc, k, 3, id)
			if err == nil && e.Cell != "b1" {
				err = fmt.Errorf("served by %s", e.Cell)
			}
			if err != nil {
				errs <- fmt.Errorf("credit %s: %w", k, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	retried := 0
	for _, k := range keys {
		if cl.books["b1"].Balance(k) != 3 || cl.books["a1"].Balance(k) != 0 {
			t.Errorf("%s: b1 %v a1 %v", k, cl.books["b1"].Balance(k), cl.books["a1"].Balance(k))
		}
		// Sent after the client caught up: one attempt; before: a 421,
		// then the retry with the same idempotency key.
		var ids []string
		for _, a := range cl.attempts(k) {
			ids = append(ids, a.Idem)
		}
		if len(ids) == 0 || len(ids) > 2 || ids[0] != ids[len(ids)-1] {
			t.Errorf("%s: attempts carried idempotency keys %v, want one key, once or twice", k, ids)
		}
		if len(ids) == 2 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no request was retried")
	}
}

// A body that cannot be replayed is never sent twice: the refusal comes back
// as the guard answered it.
func TestTransportNonReplayableBodyReturnsRefusal(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := moveSlot(t, tb1, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, nil)
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, "http://ledger/v1/credit/"+k+"?amount=1&requestId=r1", io.NopCloser(strings.NewReader("{}")))
	must(t, err)
	if req.GetBody != nil {
		t.Fatal("body is replayable")
	}
	_, resp, _ := do(s.httpClient(t), req)
	if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("response %v, want 421", resp)
	}
	var wc *cell.WrongCellError
	if err := wire.FromHTTP(resp); !errors.As(err, &wc) || wc.Owner != "b1" {
		t.Fatalf("refusal %v", err)
	}
	if n := len(cl.attempts(k)); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

func TestTransportFrozenWaitsForFlip(t *testing.T) {
	tb1 := baseMap(t, "a1", "b1")
	k := keysOf(t, tb1, "a1", 1)[0]
	tb2 := freezeSlot(t, tb1, k)
	tb3 := moveSlot(t, tb2, k, "b1")
	cl := startCluster(t, tb2, 1, "a1", "b1")
	s := newSDK(t, tb1, cl.disc, nil) // learns of the freeze from the guard's 503
	hc := s.httpClient(t)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		e, _, err := credit(ctx, hc, k, 4, "r-frozen")
		if err == nil && e.Cell != "b1" {
			err = fmt.Errorf("served by %s", e.Cell)
		}
		done <- err
	}()
	waitFor(t, "the request to wait for the flip", func() bool {
		return metricValue(s.reg, "cellkit_client_frozen_waiting", nil) == 1
	})
	cl.apply(tb3)
	s.src.Set(tb3)
	must(t, <-done)
	if at := cl.attempts(k); len(at) != 2 || at[0].Code != cell.CodeFrozen || at[1].Instance != "b1-0" {
		t.Fatalf("attempts %+v", at)
	}

	// Past the deadline: a typed error.
	s2 := newSDK(t, tb2, cl.disc, nil)
	cl.apply(tb3) // no-op: the guards are at tb3 already; s2 still sees tb2 frozen
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, _, err := credit(dctx, s2.httpClient(t), k, 1, "r-late")
	var fw *client.FrozenWaitError
	if !errors.As(err, &fw) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want *FrozenWaitError (deadline)", err)
	}
}

func TestTransportBreakerOpensForDeadCell(t *testing.T) {
	tb := baseMap(t, "a1", "b1")
	cl := startCluster(t, tb, 1, "a1")
	list, _ := cl.disc.Instances()
	cl.disc.Set(append(list, router.Instance{Cell: "b1", ID: "b1-0", HTTPAddr: deadAddr(t)}))
	s := newSDK(t, tb, cl.disc, func(c *client.Config) { c.Breaker.ConsecutiveFailures = 2; c.Breaker.OpenTimeout = time.Hour })
	hc := s.httpClient(t)
	ctx := ctxT(t)
	ka, kb := keysOf(t, tb, "a1", 1)[0], keysOf(t, tb, "b1", 1)[0]
	for range 2 {
		if _, _, err := balance(ctx, hc, kb); err == nil {
			t.Fatal("dead cell answered")
		}
	}
	_, _, err := balance(ctx, hc, kb)
	var cu *client.CellUnavailableError
	if !errors.As(err, &cu) || cu.Cell != "b1" || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("err %v, want *CellUnavailableError{b1}", err)
	}
	if e, _, err := balance(ctx, hc, ka); err != nil || e.Cell != "a1" {
		t.Fatalf("a1: %q %v", e.Cell, err)
	}
	// A cell with no known HTTP instance fails fast too, typed.
	cl.disc.Set(list[:0])
	_, _, err = balance(ctx, hc, ka)
	if !errors.As(err, &cu) || !errors.Is(err, client.ErrNoInstance) {
		t.Fatalf("err %v, want ErrNoInstance", err)
	}
}
