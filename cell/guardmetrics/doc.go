// Package guardmetrics exports a cell guard's Prometheus metrics
// (github.com/prometheus/client_golang), registered with a Registerer the
// caller passes in:
//
//	cellkit_guard_decisions_total{cell,outcome}              admitted, WRONG_CELL, FROZEN, FENCED, STALE_MAP, NO_KEY, error
//	cellkit_guard_inflight_writes{cell,instance}             admitted writes still running
//	cellkit_guard_applied_epoch{cell,instance}               highest epoch the instance may acknowledge
//	cellkit_guard_acked_epoch{cell,instance}                 epoch last acknowledged in etcd
//	cellkit_guard_fenced{cell,instance}                      1 while fenced
//	cellkit_guard_lease_renewals_total{cell,instance}        lease renewals
//	cellkit_guard_lease_renewal_failures_total{cell,instance}
//
// It is an adapter under cell/ (it imports client_golang, which imports
// net/http), listed in deps_test.go's coreAdapters.
//
//	reg := prometheus.NewRegistry()
//	m, err := guardmetrics.New(reg)
//	inst, err := etcdcell.Register(ctx, cli, etcdcell.Config{Cell: "a1", Instance: "pod-0", Observer: m})
//	defer m.Track(inst.Guard())()
//	icpt, err := grpcguard.New(inst.Guard(), grpcguard.Config{OnDecision: m.Decided})
package guardmetrics
