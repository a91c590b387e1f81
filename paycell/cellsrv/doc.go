// Package cellsrv runs one paycell instance: it opens and migrates the
// cell's books, registers the instance's guard with etcd (infra/etcdcell:
// lease, ack, endpoint; the slot count comes from the map), serves the
// HTTP/JSON and gRPC APIs behind the guard, runs the merchant settler and
// hands pending bank operations to the bank again, and stops gracefully.
// cmd/paycell is a thin flag parser around it; the demo and tests start
// several cells in one process with it.
//
//	c, err := cellsrv.NewCell(ctx, cellsrv.Config{
//		Cluster: "demo", Cell: "a1", Instance: "a1-0", Etcd: cli,
//		DSN: "sqlite:/tmp/a1.db", HTTP: httpListener, Bank: bank,
//	})
//	...
//	defer c.Close() // drain, deregister, close the books
package cellsrv
