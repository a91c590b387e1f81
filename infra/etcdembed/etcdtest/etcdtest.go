package etcdtest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// StartTimeout bounds starting etcd and the first dial. Generous: under
// -race on a loaded CI machine a cold start takes seconds.
const StartTimeout = 60 * time.Second

// Actor is who the audit log says made the changes of a Store's.
const Actor = "tester"

// RetryBackoff is a Store's base pause between CAS retries and watch
// reconnects: short, so that tests that restart etcd recover quickly.
const RetryBackoff = 5 * time.Millisecond

// Start starts a single-member etcd in t.TempDir() and stops it when the
// test ends.
func Start(t testing.TB) *etcdembed.Server {
	t.Helper()
	srv, err := start(t.TempDir())
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func start(dir string) (*etcdembed.Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	return etcdembed.Start(ctx, etcdembed.DefaultConfig(dir))
}

// Client dials srv with etcdstore.Dial and closes the client when the test
// ends.
func Client(t testing.TB, srv *etcdembed.Server) *clientv3.Client {
	t.Helper()
	cli, err := dial(srv)
	if err != nil {
		t.Fatalf("dial etcd: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func dial(srv *etcdembed.Server) (*clientv3.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	return etcdstore.Dial(ctx, etcdstore.DialConfig{Endpoints: srv.Endpoints()})
}

// Store returns a store for cluster over cli, with Actor and RetryBackoff.
// The caller closes cli (Client does so with the test).
func Store(t testing.TB, cli *clientv3.Client, cluster string) *etcdstore.Store {
	t.Helper()
	st, err := etcdstore.New(cli, etcdstore.Config{Cluster: cluster, Actor: Actor, RetryBackoff: RetryBackoff})
	if err != nil {
		t.Fatalf("etcdstore.New: %v", err)
	}
	return st
}

// TwoCellMap returns a valid, mutable map of slots slots at epoch 0, ready
// for Store.Create: cell a1 (IDC-A, active) owns the first half, b1 (IDC-B,
// active) the second. slots must be even and at least 2.
func TwoCellMap(t testing.TB, slots int) *router.Table {
	t.Helper()
	tb, err := router.NewTable(slots)
	if err == nil {
		err = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive})
	}
	if err == nil {
		err = tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B", State: router.StateActive})
	}
	if err == nil {
		err = tb.Assign(router.SlotRange{First: 0, Last: slots/2 - 1}, "a1")
	}
	if err == nil {
		err = tb.Assign(router.SlotRange{First: slots / 2, Last: slots - 1}, "b1")
	}
	if err == nil {
		err = tb.Validate()
	}
	if err != nil {
		t.Fatalf("two-cell map of %d slots: %v", slots, err)
	}
	return tb
}

// Shared is one etcd for a whole test package: it starts on the first
// Client call and stops in Close, which TestMain calls after m.Run (a test's
// Cleanup would stop it too early). Tests keep apart by cluster name. The
// zero value is ready to use; it is safe for concurrent use.
type Shared struct {
	mu  sync.Mutex
	dir string
	srv *etcdembed.Server
	cli *clientv3.Client
}

// Client returns the shared client, starting etcd on first use. The client
// stays open until Close: do not close it.
func (s *Shared) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cli != nil {
		return s.cli
	}
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := start(dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start etcd: %v", err)
	}
	cli, err := dial(srv)
	if err != nil {
		srv.Close()
		os.RemoveAll(dir)
		t.Fatalf("dial etcd: %v", err)
	}
	s.dir, s.srv, s.cli = dir, srv, cli
	return cli
}

// Close closes the client, stops etcd and removes its directory, if Client
// started them. Call it from TestMain after m.Run.
func (s *Shared) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cli != nil {
		s.cli.Close()
	}
	if s.srv != nil {
		s.srv.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
	s.dir, s.srv, s.cli = "", nil, nil
}
