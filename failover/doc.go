// Package failover moves slots between cells: the pure planner (NewPlan),
// the pure cutover state machine (Step), and the Runner that performs its
// actions through a Control (infra/etcdcutover implements it over etcd),
// a DataMover (NoneMover here; SQL movers in infra) and Gates (ProbeGate
// here; a Prometheus gate in infra/prometheus).
//
//	p, err := failover.NewPlan(table, failover.Request{
//		From: failover.Endpoints{IDCs: []string{"IDC-A"}},
//		To:   failover.Endpoints{IDCs: []string{"IDC-B"}},
//	}) // stages whitelist, 1/256, 1/8, 1/4, 1/2, 1
//
// Plans are deterministic. Each stage adds whole blocks of slots (one slot
// at 1024 slots, 64 at 65536), taken in bit-reversed block order so every
// stage is spread over the slot space while the map stays a few KiB; targets
// are balanced by slot count; the whitelist stage moves exactly the canary
// keys, each to the target its slot will go to.
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
//
// Every map edit is a Change that applies idempotently, and the runner
// stores the workflow record (State) in the same etcd transaction as the
// edit, conditional on holding the cutover lock: a runner that dies at any
// step is resumed from its record by feeding EvResume, which re-issues the
// recorded step's action. A failed barrier, data gate or flip unfreezes
// the stage (status failed, resumable); a failed gate after a flip rolls
// the stage back with the same protocol in reverse. The golden scenarios in
// testdata/scenarios walk every failure at every step.
package failover
