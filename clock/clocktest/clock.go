// Package clocktest provides a fake clock.Clock that only moves when a test
// calls Advance.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/cellkit/cellkit/clock"
)

// Clock is a manually advanced clock. The zero value is not usable; use New.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

var _ clock.Clock = (*Clock)(nil)

// New returns a fake clock reading start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and fires every timer that falls due,
// in deadline order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []*timer
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.when.After(now) {
			due = append(due, t)
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].when.Before(due[j].when) })
	for _, t := range due {
		t.fire(now)
	}
}

// Pending returns how many timers are waiting to fire.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NewTimer returns a timer that fires when the clock has advanced by d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	t := &timer{c: c, ch: make(chan time.Time, 1)}
	c.schedule(t, d)
	return t
}

// AfterFunc calls f in a new goroutine when the clock has advanced by d.
func (c *Clock) AfterFunc(d time.Duration, f func()) clock.Timer {
	t := &timer{c: c, f: f}
	c.schedule(t, d)
	return t
}

func (c *Clock) schedule(t *timer, d time.Duration) {
	c.mu.Lock()
	t.when = c.now.Add(d)
	due := d <= 0
	if !due {
		c.timers = append(c.timers, t)
	}
	now := c.now
	c.mu.Unlock()
	if due {
		t.fire(now)
	}
}

func (c *Clock) remove(t *timer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

type timer struct {
	c    *Clock
	when time.Time
	ch   chan time.Time
	f    func()
}

func (t *timer) fire(now time.Time) {
	if t.f != nil {
		go t.f()
		return
	}
	select {
	case t.ch <- now:
	default:
	}
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool { return t.c.remove(t) }

func (t *timer) Reset(d time.Duration) bool {
	active := t.c.remove(t)
	t.c.schedule(t, d)
	return active
}
