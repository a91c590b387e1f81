// Package failover will move slots between cells. NOT BUILT YET: this file
// only reserves the package and says what it is for.
//
// A planned cutover moves a set of slots in stages (whitelisted users, then
// 1/256, 1/8, 1/4, 1/2, all). Each stage freezes the slots, waits for every
// guard to ack the freeze, waits for the data gate (the target has every
// write the source made), flips the owner and soaks under SLO gates, rolling
// back the same way on failure. Emergency failover of a lost IDC freezes the
// dead cells' slots, waits for their ack leases to expire, drains what the
// target already has and flips, reporting what may have been lost when
// replication was not synchronous.
//
// The planner and the cutover state machine are pure (Step(state, event)
// returns the next state and the actions to perform); a runner performs the
// actions against etcd and the data tier. The pure part imports no etcd,
// network or SQL package (see deps_test.go at the module root).
package failover
