// Package etcdstore keeps the shard map in etcd: linearizable loads, an
// ordered watch that survives reconnects and compaction, and compare-and-swap
// updates that bump the epoch by exactly one and write an audit record in the
// same transaction.
//
// Layout under /cellkit/<cluster>/ (see docs/architecture.md):
//
//	map                      the current table (router JSON document)
//	audit/<epoch:020d>       who, when, why and the diff of the change that made that epoch
//	acks/<cell>/<inst>       a guard instance's acked epoch, under its lease (infra/etcdcell)
//	endpoints/<cell>/<inst>  where a cell instance listens, under its lease (infra/etcdcell)
//
// A map document that does not decode or validate never reaches a watcher as
// a table: Watch sends it as an Event with Err set, so router.Watcher keeps
// the last good table.
//
//	cli, err := etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: []string{"http://127.0.0.1:2379"}})
//	st, err := etcdstore.New(cli, etcdstore.Config{Cluster: "prod", Actor: "alice"})
//	t, err := st.Update(ctx, "whitelist canary", func(t *router.Table) error {
//		return t.SetWhitelist("u42", "b1")
//	})
package etcdstore
