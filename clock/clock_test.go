package clock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/clock/clocktest"
)

func TestSleep(t *testing.T) {
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	c := clocktest.New(time.Unix(0, 0))

	if err := clock.Sleep(ctx, c, 0); err != nil {
		t.Errorf("d=0: %v", err)
	}
	if err := clock.Sleep(canceled, c, -time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("d<0, canceled: %v", err)
	}
	if err := clock.Sleep(canceled, c, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled during the wait: %v", err)
	}
	if c.Pending() != 0 {
		t.Errorf("%d timers left behind", c.Pending())
	}

	done := make(chan error, 1)
	go func() { done <- clock.Sleep(ctx, c, time.Minute) }()
	for deadline := time.Now().Add(10 * time.Second); c.Pending() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Sleep set no timer")
		}
	}
	c.Advance(time.Minute)
	if err := <-done; err != nil {
		t.Errorf("after the clock passed d: %v", err)
	}
}
