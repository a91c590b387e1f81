package etcdtest_test

import (
	"context"
	"testing"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
)

// A test gets an etcd, a client and a store, and starts from the two-cell
// map. (Compiled, not run: an example has no *testing.T. TestStartClientStore
// runs the same steps.)
func Example() {
	_ = func(t *testing.T) {
		cli := etcdtest.Client(t, etcdtest.Start(t))
		st := etcdtest.Store(t, cli, "test")
		tb, err := st.Create(context.Background(), "bootstrap", etcdtest.TwoCellMap(t, 256))
		if err != nil {
			t.Fatal(err)
		}
		_ = tb.Owner("u42") // a1 or b1
	}
}

// One etcd for the package: started by the first test that asks, stopped
// after the last.
func ExampleShared() {
	var shared etcdtest.Shared
	_ = func(m *testing.M) { // TestMain
		code := m.Run()
		shared.Close()
		_ = code // os.Exit(code)
	}
	_ = func(t *testing.T) {
		st := etcdtest.Store(t, shared.Client(t), "test-1")
		_, _ = st.Create(context.Background(), "bootstrap", etcdtest.TwoCellMap(t, 256))
	}
}
