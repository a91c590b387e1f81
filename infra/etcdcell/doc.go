// Package etcdcell keeps one cell guard instance alive in etcd: its lease,
// its ack and its endpoint, and the self-fencing that ties them together.
// It also reads acks for the cutover runner's barrier and serves the
// embedded-default router.Discovery.
//
// Keys under /cellkit/<cluster>/ (see etcdstore.Keys):
//
//	acks/<cell>/<instance>       {"epoch", "at", "instance"}: the highest map epoch the instance acknowledged
//	endpoints/<cell>/<instance>  router.Instance JSON: where the instance listens
//
// Both are bound to the instance's lease. Register grants the lease (noting
// when the request was sent), reads the map with a linearizable read,
// creates the guard (cell.NewGuard with a cell.Fence) and starts a
// router.Watcher that applies every newer map to it, then puts ack and
// endpoint — in a transaction that fails if the map changed since the read,
// so a cutover's barrier never misses an instance that read an older map —
// and only then opens the fence. Until then, and whenever the fence is
// closed, the guard refuses everything with FENCED.
//
// Self-fencing (DESIGN.md): the instance renews its lease with single
// KeepAliveOnce calls every TTL/3 and tells the fence the send time of each
// success; the fence closes by itself at (last successful send) + TTL −
// FenceMargin on the monotonic clock, before etcd can expire the lease and
// drop the ack. A lost lease (revoked, expired) trips it at once. A fenced
// instance keeps trying to register anew: new lease, linearizable re-read of
// the map, ack and endpoint put again, fence reopened.
//
// Acks move forward only: each time the guard's Applied epoch rises (which
// waits for writes in flight on slots the new epoch took away) the instance
// puts it. Acks.WaitAcks is the barrier: it returns once every listed
// instance acked an epoch; instances whose lease expired are no longer
// listed, as they fenced themselves.
//
//	in, err := etcdcell.Register(ctx, cli, etcdcell.Config{
//		Cluster: "prod", Cell: "a1", Instance: hostname, GRPCAddr: ":9090",
//	})
//	if err != nil {
//		return err
//	}
//	defer in.Close() // after the servers stopped: drops ack and endpoint at once
//	icpt, err := grpcguard.New(in.Guard(), grpcguard.Config{...})
//
//	// Cutover runner, after writing the freeze at epoch e:
//	acks, _ := etcdcell.NewAcks(cli, "prod")
//	if _, err := acks.WaitAcks(barrierCtx, e); err != nil { /* unfreeze: stage failed */ }
package etcdcell
