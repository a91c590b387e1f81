// Package etcdtest gives tests an embedded etcd (infra/etcdembed) the same
// way everywhere: started in t.TempDir(), a client dialled through
// infra/etcdstore.Dial, a store with fast retries, and the two-cell map most
// tests begin from. Everything is closed with t.Cleanup. Tests still use a
// real etcd, never a mock of it; this package only saves each test package
// writing the set-up again.
//
// It is a normal package, not a _test.go file, so that tests of other
// packages can import it; only tests should.
//
//	func TestSomething(t *testing.T) {
//		srv := etcdtest.Start(t)
//		cli := etcdtest.Client(t, srv)
//		st := etcdtest.Store(t, cli, "test")
//		if _, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 256)); err != nil {
//			t.Fatal(err)
//		}
//		...
//	}
//
// A package whose tests each need only a cluster of their own can share one
// etcd among them with Shared, closed from TestMain.
package etcdtest
