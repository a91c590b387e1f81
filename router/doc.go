// Package router is the pure routing core of cellkit: slots, slot-bearing
// IDs, the immutable shard map (Table) with its compact JSON document and
// diffs, and the Watcher that holds the current table in an atomic.Pointer.
//
// It imports no etcd, network or SQL package (deps_test.go at the module root
// enforces it); infra/etcdstore implements Source to feed a Watcher from etcd.
//
// A key's slot is xxh64(key, seed 0) mod SlotCount. An ID minted with NewID
// carries the routing hash of the key it was minted for, so it routes with
// that key — to its slot, or to the cell the key is whitelisted to — without
// a lookup. docs/routing.md is the contract for SDKs in other languages.
//
//	t, _ := router.NewTable(1024)
//	t.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
//	t.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
//	t.Assign(router.SlotRange{First: 0, Last: 511}, "a1")
//	t.Assign(router.SlotRange{First: 512, Last: 1023}, "b1")
//	if err := t.Validate(); err != nil { ... }
//	t.Seal()
//	r := t.Lookup("u42") // r.Slot, r.Cell.ID, r.Frozen, r.Whitelisted, r.Epoch
package router
