// Package clocktest provides Clock, a fake clock.Clock that moves only when a
// test calls Advance, firing due timers in deadline order.
//
//	c := clocktest.New(time.Unix(0, 0))
//	tm := c.NewTimer(time.Second)
//	c.Advance(time.Second)
//	<-tm.C()
package clocktest
