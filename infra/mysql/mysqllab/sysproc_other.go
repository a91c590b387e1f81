//go:build !linux

package mysqllab

import "syscall"

// sysProcAttr puts a server in a session of its own. Only Linux can tie a
// child's life to its parent's; elsewhere an undetached lab's servers
// outlive a crashed test.
func sysProcAttr(detach bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}
