package cell

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cellkit/cellkit/clock"
)

// Fence is the self-fencing state of one guard instance. The instance's ack
// lives under an etcd lease; the lease outlives the last successful renewal
// by at most its TTL, so the instance stops admitting at
//
//	(send time of the last successful renewal) + TTL − margin
//
// on its own monotonic clock, before anyone waiting for the lease to expire
// can conclude it is gone. A fence starts fenced; Resume (after registering
// the lease and re-reading the map) opens it; a fenced instance stays fenced
// until the next Resume, whatever renewals arrive late.
type Fence struct {
	clock  clock.Clock
	margin time.Duration
	cell   string
	inst   string

	mu       sync.Mutex
	live     bool
	deadline time.Time
	reason   string
	timer    clock.Timer
	ctx      context.Context
	cancel   context.CancelCauseFunc
}

// NewFence returns a fenced Fence. margin is subtracted from every lease
// deadline to cover clock-rate drift and the time between a check and the
// write it admits.
func NewFence(c clock.Clock, margin time.Duration, cell, instance string) *Fence {
	f := &Fence{clock: c, margin: margin, cell: cell, inst: instance, reason: "not registered yet"}
	f.ctx, f.cancel = context.WithCancelCause(context.Background())
	f.cancel(f.errLocked())
	return f
}

// Resume opens the fence after the instance registered its lease (granted
// with ttl by a request sent at sentAt) and re-read the map.
func (f *Fence) Resume(sentAt time.Time, ttl time.Duration) error {
	if ttl <= f.margin {
		return fmt.Errorf("cell: lease TTL %v must exceed the fencing margin %v: %w", ttl, f.margin, ErrBadConfig)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	deadline := sentAt.Add(ttl - f.margin)
	if !f.clock.Now().Before(deadline) {
		f.reason = "lease registration took longer than its TTL"
		return f.errLocked()
	}
	if !f.live {
		f.ctx, f.cancel = context.WithCancelCause(context.Background())
	}
	f.live, f.deadline, f.reason = true, deadline, ""
	f.armLocked()
	return nil
}

// Renewed records a successful lease renewal sent at sentAt that set the
// lease's remaining life to ttl. It never reopens a tripped fence.
func (f *Fence) Renewed(sentAt time.Time, ttl time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.live {
		return
	}
	if f.expiredLocked() {
		f.tripLocked("lease not renewed in time")
		return
	}
	if d := sentAt.Add(ttl - f.margin); d.After(f.deadline) {
		f.deadline = d
		f.armLocked()
	}
}

// Trip fences the instance now (lease lost, revoked, or the watch says so).
func (f *Fence) Trip(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live {
		f.tripLocked(reason)
	}
}

// Check returns nil if the instance may admit requests, else a *FencedError.
// It reads the clock itself, so it does not depend on a timer having fired.
func (f *Fence) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live && f.expiredLocked() {
		f.tripLocked("lease not renewed in time")
	}
	if f.live {
		return nil
	}
	return f.errLocked()
}

// Context is cancelled, with a *FencedError as its cause, when the instance
// fences; guards tie admitted requests to it so their writes stop too.
func (f *Fence) Context() context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctx
}

// Deadline returns when the instance fences unless renewed, and whether it
// is live at all.
func (f *Fence) Deadline() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deadline, f.live
}

func (f *Fence) expiredLocked() bool { return !f.clock.Now().Before(f.deadline) }

func (f *Fence) armLocked() {
	if f.timer != nil {
		f.timer.Stop()
	}
	d := f.deadline.Sub(f.clock.Now())
	f.timer = f.clock.AfterFunc(d, func() { f.Check() })
}

func (f *Fence) tripLocked(reason string) {
	f.live, f.reason = false, reason
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	f.cancel(f.errLocked())
}

func (f *Fence) errLocked() error {
	return &FencedError{Cell: f.cell, Instance: f.inst, Reason: f.reason}
}
