// Package etcdcutover keeps cutover workflows in etcd: the records at
// /cellkit/<cluster>/cutovers/<id>, the operator commands for a running
// cutover at commands/<id>, and the one-at-a-time lock at locks/cutover,
// bound to the runner's lease. Control implements failover.Control: every
// write it makes — map edits with their record, record saves, consumed
// commands — is one etcd transaction conditional on the runner still
// owning the lock, so a runner whose lease expired (it was partitioned, or
// paused for long) can never write over the runner that took over.
//
//	ctl, err := etcdcutover.Acquire(ctx, cli, etcdcutover.Config{Cluster: "prod", Actor: "alice"})
//	defer ctl.Close()
//	r := failover.Runner{Control: ctl}
//	state, err = r.Run(ctx, state, failover.Event{Kind: failover.EvResume, At: time.Now()})
//
// Records reads and follows records and sends commands; it needs no lock.
package etcdcutover
