package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/router"
)

func noEnv(string) (string, bool) { return "", false }

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--cell is required"},
		{[]string{"--cell", "a1"}, "--db is required"},
		{[]string{"--cell", "a 1", "--db", "sqlite:x"}, "--cell"},
		{[]string{"--cell", "a1", "--instance", "-x-", "--db", "sqlite:x"}, "--instance"},
		{[]string{"--cell", "a1", "--db", "postgres://x"}, "--db"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--etcd", "127.0.0.1:2379"}, "--etcd"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--cluster", "a/b"}, "--cluster"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--http", ""}, "serve at least one"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--http", "8080"}, "--http"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--bank-url", "http://r", "--bank-submit-url", "http://b"}, "give one of them"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--bank-url", "router:8080"}, "--bank-url"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--bank-failure-rate", "2"}, "--bank-failure-rate"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--settle-every", "-1s"}, "--settle-every"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--lease-ttl", "100ms"}, "--lease-ttl"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "--log-level", "loud"}, "--log-level"},
		{[]string{"--cell", "a1", "--db", "sqlite:x", "extra"}, "unexpected arguments"},
		{[]string{"--nope"}, "flag provided but not defined"},
		{[]string{"bank"}, "--callback-url is required"},
		{[]string{"bank", "--callback-url", "ftp://x"}, "--callback-url"},
		{[]string{"bank", "--callback-url", "http://r", "--listen", "nope"}, "--listen"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stderr, noEnv)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "paycell -h") {
			t.Errorf("paycell %q: exit %d, stderr %q; want %d mentioning %q", tc.args, code, stderr.String(), exitUsage, tc.want)
		}
	}
	for _, args := range [][]string{{"-h"}, {"bank", "-h"}} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, &stderr, noEnv); code != exitOK || !strings.Contains(stderr.String(), "Usage") && !strings.Contains(stderr.String(), "Flags") {
			t.Errorf("paycell %q: exit %d, %q", args, code, stderr.String())
		}
	}
}

func TestDefaultsFromEnvironment(t *testing.T) {
	env := func(k string) (string, bool) {
		v, ok := map[string]string{envEtcd: "http://e1:2379, http://e2:2379", envCluster: "prod", envPassword: "s"}[k]
		return v, ok
	}
	c, err := parseCell([]string{"--cell", "a1", "--db", "sqlite:x", "--etcd-user", "u"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.cluster != "prod" || strings.Join(c.etcd.Endpoints, ",") != "http://e1:2379,http://e2:2379" || c.etcd.Password != "s" || !strings.HasPrefix(c.instance, "a1-") {
		t.Fatalf("config %+v", c)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeAndStop runs the command against an embedded etcd: it serves,
// registers its instance, and on cancellation stops gracefully and leaves
// etcd.
func TestServeAndStop(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := etcdtest.Client(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := etcdtest.Store(t, cli, "cmdtest").Create(ctx, "test", etcdtest.TwoCellMap(t, 1024)); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	args := []string{"--cluster", "cmdtest", "--cell", "a1", "--instance", "a1-0", "--etcd", srv.Endpoints()[0],
		"--db", "sqlite:" + filepath.Join(t.TempDir(), "a1.db"), "--http", addr, "--grpc", freeAddr(t),
		"--bank-url", "http://" + addr, "--bank-delay", "1ms", "--settle-every", "10ms", "--lease-ttl", "2s", "--log-format", "text"}
	runCtx, stop := context.WithCancel(ctx)
	var stderr syncBuffer
	exited := make(chan int, 1)
	go func() { exited <- run(runCtx, args, &stderr, noEnv) }()

	api := paycell.NewClient("http://"+addr, nil)
	user := "u-0"
	for i := 0; router.KeySlot(user, 1024) >= 512; i++ { // a1 owns slots 0-511
		user = fmt.Sprintf("u-%d", i)
	}
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		if _, err = api.OpenAccount(ctx, paycell.OpenRequest{Owner: user, RequestID: "open"}); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case code := <-exited:
			t.Fatalf("paycell exited %d early:\n%s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("paycell never served: %v\n%s", err, stderr.String())
	}
	// The in-process bank calls this very cell back.
	top, err := api.TopUp(ctx, paycell.BankRequest{Owner: user, RequestID: "t1", Amount: 10})
	if err != nil {
		t.Fatal(err)
	}
	for a, _ := api.Balance(ctx, user); a.Balance != 10; a, _ = api.Balance(ctx, user) {
		if time.Now().After(deadline) {
			t.Fatalf("top-up %s never credited:\n%s", top.OpID, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := endpoints(t, cli, ctx); n != 1 {
		t.Fatalf("%d endpoints registered, want 1", n)
	}
	stop()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("exit %d:\n%s", code, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("paycell did not stop")
	}
	if n := endpoints(t, cli, ctx); n != 0 {
		t.Fatalf("%d endpoints left in etcd after a graceful stop", n)
	}
	if !strings.Contains(stderr.String(), "paycell stopped") {
		t.Fatalf("log:\n%s", stderr.String())
	}
}

func endpoints(t *testing.T, cli *clientv3.Client, ctx context.Context) int64 {
	t.Helper()
	st, err := etcdstore.New(cli, etcdstore.Config{Cluster: "cmdtest"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, st.Keys().Endpoint("a1", ""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBankServer(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		exited <- run(ctx, []string{"bank", "--listen", addr, "--callback-url", "http://127.0.0.1:1"}, &stderr, noEnv)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bank never served: %v\n%s", err, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-exited; code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}
