package etcdcell_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

// TestMain fails the package if a goroutine outlives its instance, client,
// proxy or server.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait; the tests poll, never sleep.
const testTimeout = 30 * time.Second

const cluster = "test"

// dial connects to endpoints with a short reconnect backoff, so that a
// client cut off by a proxy comes back quickly once the proxy does.
func dial(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 300 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatalf("dial etcd: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// createMap stores a 256-slot map: a1 (IDC-A) owns 0-127, b1 (IDC-B)
// 128-255.
func createMap(t *testing.T, cli *clientv3.Client) *etcdstore.Store {
	t.Helper()
	st := etcdtest.Store(t, cli, cluster)
	if _, err := st.Create(ctxT(t), "test map", etcdtest.TwoCellMap(t, 256)); err != nil {
		t.Fatal(err)
	}
	return st
}

func update(t *testing.T, st *etcdstore.Store, why string, fn func(*router.Table) error) *router.Table {
	t.Helper()
	tb, err := st.Update(ctxT(t), why, fn)
	must(t, err)
	return tb
}

// keyIn returns a key whose slot (256 slots) is s.
func keyIn(s int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("user-%d", i); router.Slot(k, 256) == s {
			return k
		}
	}
}

// tlog sends slog output to t.Log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func register(t *testing.T, cli *clientv3.Client, cellID, inst string, edit func(*etcdcell.Config)) *etcdcell.Instance {
	t.Helper()
	cfg := etcdcell.Local(cellID, inst)
	cfg.Cluster = cluster
	cfg.Logger = logger(t)
	if edit != nil {
		edit(&cfg)
	}
	in, err := etcdcell.Register(ctxT(t), cli, cfg)
	if err != nil {
		t.Fatalf("register %s/%s: %v", cellID, inst, err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Errorf("close %s/%s: %v", cellID, inst, err)
		}
	})
	return in
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// cellServer is testsvc on loopback behind the guard of one instance.
// Credits whose requestId is "hold" block until release is closed.
type cellServer struct {
	inst    *etcdcell.Instance
	client  *testsvc.Client
	addr    string
	release chan struct{}
	once    sync.Once
	held    chan struct{} // gets a value when a held credit has been admitted
}

// Release lets held credits go on.
func (cs *cellServer) Release() { cs.once.Do(func() { close(cs.release) }) }

func serveCell(t *testing.T, inst *etcdcell.Instance, log *admission.Log) *cellServer {
	return serveCellWork(t, inst, log, 0)
}

// serveCellWork is serveCell with each credit taking work (simulated service
// time, so that writes are in flight while the map changes).
func serveCellWork(t *testing.T, inst *etcdcell.Instance, log *admission.Log, work time.Duration) *cellServer {
	t.Helper()
	cs := &cellServer{inst: inst, release: make(chan struct{}), held: make(chan struct{}, 16)}
	icpt, err := grpcguard.New(inst.Guard(), grpcguard.Config{
		Methods: map[string]grpcguard.Method{
			testsvc.CreditMethod:    {Kind: cell.Write, Key: func(req any) (string, error) { return req.(*structpb.Struct).GetFields()["key"].GetStringValue(), nil }},
			testsvc.BalanceMethod:   {Kind: cell.Read},
			testsvc.StatementMethod: {Kind: cell.Read},
		},
		OnAdmit:   log.Admitted,
		OnRelease: log.Released,
	})
	must(t, err)
	hold := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if req.(*structpb.Struct).GetFields()["requestId"].GetStringValue() == "hold" {
			cs.held <- struct{}{}
			<-cs.release
		}
		if work > 0 {
			tm := time.NewTimer(work)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-ctx.Done():
			}
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(icpt.Unary(), hold), grpc.ChainStreamInterceptor(icpt.Stream()))
	testsvc.NewServer(inst.Guard().Cell()).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	cs.addr = lis.Addr().String()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lis)
	}()
	cc, err := grpc.NewClient(cs.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	cs.client = testsvc.NewClient(cc)
	t.Cleanup(func() {
		cs.Release()
		cc.Close()
		srv.Stop()
		wg.Wait()
	})
	return cs
}

func (cs *cellServer) credit(ctx context.Context, key, req string) (testsvc.Entry, error) {
	return cs.client.Credit(metadata.AppendToOutgoingContext(ctx, wire.KeyMD, key), key, 1, req)
}

func ackKey(cellID, inst string) string { return etcdstore.KeysFor(cluster).Ack(cellID, inst) }

func endpointKey(cellID, inst string) string {
	return etcdstore.KeysFor(cluster).Endpoint(cellID, inst)
}

func exists(t *testing.T, cli *clientv3.Client, key string) bool {
	t.Helper()
	resp, err := cli.Get(ctxT(t), key, clientv3.WithCountOnly())
	must(t, err)
	return resp.Count > 0
}
