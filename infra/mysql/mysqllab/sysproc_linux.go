package mysqllab

import "syscall"

// sysProcAttr puts a server in a session of its own (a terminal's Ctrl-C
// does not reach it). Unless detached, the kernel kills it when the
// process that started it dies, so a crashed test leaves no server behind.
func sysProcAttr(detach bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setsid: true}
	if !detach {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}
