// Package clock makes time an input. Cores in router, cell and failover take a
// Clock instead of calling time.Now, so tests drive them with the fake clock in
// clock/clocktest and never sleep.
//
//	c := clock.Real()
//	t := c.NewTimer(time.Second)
//	<-t.C()
package clock
