package clocktest

import (
	"testing"
	"time"
)

func TestTimersFireInOrderOnAdvance(t *testing.T) {
	c := New(time.Unix(1000, 0))
	t1 := c.NewTimer(2 * time.Second)
	t2 := c.NewTimer(time.Second)
	done := make(chan struct{})
	c.AfterFunc(3*time.Second, func() { close(done) })

	c.Advance(500 * time.Millisecond)
	select {
	case <-t2.C():
		t.Fatal("timer fired early")
	default:
	}
	c.Advance(time.Second)
	<-t2.C()
	if t1.Stop() != true {
		t.Fatal("t1 should have been active")
	}
	c.Advance(5 * time.Second)
	select {
	case <-t1.C():
		t.Fatal("stopped timer fired")
	default:
	}
	<-done
	if got := c.Now(); !got.Equal(time.Unix(1006, 500e6)) {
		t.Fatalf("Now = %v", got)
	}
	if c.Pending() != 0 {
		t.Fatalf("pending = %d", c.Pending())
	}
}

func TestResetReschedules(t *testing.T) {
	c := New(time.Unix(0, 0))
	tm := c.NewTimer(time.Second)
	if !tm.Reset(3 * time.Second) {
		t.Fatal("Reset of active timer reported inactive")
	}
	c.Advance(2 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("fired at old deadline")
	default:
	}
	c.Advance(time.Second)
	<-tm.C()
}
