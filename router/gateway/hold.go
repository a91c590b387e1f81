package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/router"
)

// holds counts the requests held for frozen slots, per slot and in all.
type holds struct {
	maxPerSlot, maxTotal int

	mu     sync.Mutex
	total  int
	bySlot map[int]int
}

func newHolds(perSlot, total int) *holds {
	return &holds{maxPerSlot: perSlot, maxTotal: total, bySlot: map[int]int{}}
}

// acquire takes a place for slot; it returns "" on success, else the bound
// that is reached ("slot" or "total").
func (h *holds) acquire(slot int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.bySlot[slot] >= h.maxPerSlot:
		return "slot"
	case h.total >= h.maxTotal:
		return "total"
	}
	h.bySlot[slot]++
	h.total++
	return ""
}

func (h *holds) release(slot int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	if h.bySlot[slot]--; h.bySlot[slot] <= 0 {
		delete(h.bySlot, slot)
	}
}

// bufferError is the router's own refusal of a request for a frozen key:
// the buffer is full or the flip did not come in time. It unwraps to a
// *cell.FrozenError, so cell/wire turns it into 503 + Retry-After (gRPC:
// Unavailable with RetryInfo) with the code FROZEN.
type bufferError struct {
	reason  string
	timeout bool // false: the buffer was full
	frozen  *cell.FrozenError
}

func (e *bufferError) Error() string {
	return fmt.Sprintf("cellrouter: key %q (slot %d) is frozen by cutover %q and the router %s; retry after %v",
		e.frozen.Key, e.frozen.Slot, e.frozen.Cutover, e.reason, e.frozen.RetryAfter)
}

func (e *bufferError) Unwrap() error { return e.frozen }

// hold waits until key's route is no longer frozen and returns the new
// route. It holds nothing of the request but its place in the buffer: the
// caller has not read the request's body or messages yet.
func (g *Gateway) hold(ctx context.Context, proto, key string, r router.Route) (router.Route, error) {
	refuse := func(reason string, timeout bool) error {
		return &bufferError{reason: reason, timeout: timeout, frozen: &cell.FrozenError{
			Key: key, Slot: r.Slot, Cutover: r.Cutover, RetryAfter: g.cfg.Buffer.RetryAfter.D(), Epoch: r.Epoch,
		}}
	}
	if bound := g.holds.acquire(r.Slot); bound != "" {
		g.m.overflows.WithLabelValues(proto, bound).Inc()
		g.log.Warn("frozen-slot buffer full", "proto", proto, "slot", r.Slot, "bound", bound, "cutover", r.Cutover)
		return r, refuse(fmt.Sprintf("buffer is full (%s bound)", bound), false)
	}
	g.m.buffered.Inc()
	defer func() {
		g.m.buffered.Dec()
		g.holds.release(r.Slot)
	}()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, g.cfg.Buffer.Timeout.D())
	defer cancel()
	for r.Frozen {
		t, err := g.watcher.WaitEpoch(wctx, r.Epoch+1)
		if err != nil {
			if ctx.Err() != nil {
				g.m.frozenWaits.WithLabelValues(proto, "canceled").Observe(time.Since(start).Seconds())
				return r, context.Cause(ctx)
			}
			g.m.frozenWaits.WithLabelValues(proto, "timeout").Observe(time.Since(start).Seconds())
			return r, refuse(fmt.Sprintf("held it %v without seeing the flip", g.cfg.Buffer.Timeout.D()), true)
		}
		r = t.Lookup(key)
	}
	g.m.frozenWaits.WithLabelValues(proto, "released").Observe(time.Since(start).Seconds())
	return r, nil
}

// catchUp waits (up to RedirectWait) for the router's map to reach the
// epoch a refusing guard decided with. It reports whether it did.
func (g *Gateway) catchUp(ctx context.Context, epoch uint64) bool {
	if g.watcher.Table().Epoch() >= epoch {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.RedirectWait.D())
	defer cancel()
	_, err := g.watcher.WaitEpoch(wctx, epoch)
	return err == nil
}

// refusalEpoch is the epoch a guard refusal was decided at, and the owner it
// names (WRONG_CELL only).
func refusalEpoch(err error) (epoch uint64, owner string) {
	var wc *cell.WrongCellError
	var fz *cell.FrozenError
	var sm *cell.StaleMapError
	switch {
	case errors.As(err, &wc):
		return wc.Epoch, wc.Owner
	case errors.As(err, &fz):
		return fz.Epoch, ""
	case errors.As(err, &sm):
		return sm.Want, ""
	}
	return 0, ""
}

// retryable reports whether a guard refusal is one the router retries once.
func retryable(c cell.Code) bool {
	return c == cell.CodeWrongCell || c == cell.CodeFrozen || c == cell.CodeStaleMap
}
