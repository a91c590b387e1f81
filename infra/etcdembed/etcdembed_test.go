package etcdembed_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cellkit/cellkit/infra/etcdembed"
)

// TestMain fails the package if any goroutine outlives its Server or
// client: Close must wait for etcd to stop completely.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests; they poll, never sleep.
const testTimeout = 30 * time.Second

func startServer(t *testing.T, cfg etcdembed.Config) *etcdembed.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newClient(t *testing.T, s *etcdembed.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, ctx context.Context, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("Get %q: %d keys, want 1", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

// putEventually retries a put until the restarted member accepts it.
func putEventually(t *testing.T, ctx context.Context, cli *clientv3.Client, key, val string) {
	t.Helper()
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Put(attempt, key, val)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("Put %q never succeeded: %v", key, err)
		}
		t.Logf("Put %q: %v (retrying)", key, err)
	}
}

var endpointRE = regexp.MustCompile(`^http://127\.0\.0\.1:[1-9][0-9]*$`)

func TestStartPutGet(t *testing.T) {
	s := startServer(t, etcdembed.DefaultConfig(t.TempDir()))
	if eps := s.Endpoints(); len(eps) != 1 || eps[0] != s.ClientURL() || !endpointRE.MatchString(eps[0]) {
		t.Fatalf("Endpoints() = %q, ClientURL() = %q; want one http://127.0.0.1:<port>", eps, s.ClientURL())
	}
	cli := newClient(t, s)
	ctx := testContext(t)
	if _, err := cli.Put(ctx, "/cellkit/test/map", "v1"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := mustGet(t, ctx, cli, "/cellkit/test/map"); got != "v1" {
		t.Fatalf("Get = %q, want v1", got)
	}
}

func TestZeroConfigUsesDefaults(t *testing.T) {
	s := startServer(t, etcdembed.Config{Dir: t.TempDir()})
	if !endpointRE.MatchString(s.ClientURL()) {
		t.Fatalf("ClientURL() = %q, want http://127.0.0.1:<port>", s.ClientURL())
	}
}

func TestRestartKeepsDataEndpointAndWatch(t *testing.T) {
	s := startServer(t, etcdembed.DefaultConfig(t.TempDir()))
	before := s.ClientURL()
	cli := newClient(t, s)
	ctx := testContext(t)

	put, err := cli.Put(ctx, "k", "v1")
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	wch := cli.Watch(ctx, "k", clientv3.WithRev(put.Header.Revision+1))

	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got := s.ClientURL(); got != before {
		t.Fatalf("ClientURL after Restart = %q, want %q", got, before)
	}
	if got := mustGet(t, ctx, cli, "k"); got != "v1" {
		t.Fatalf("Get after Restart = %q, want v1", got)
	}

	putEventually(t, ctx, cli, "k", "v2")
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				if string(ev.Kv.Value) == "v2" {
					return
				}
			}
		case <-ctx.Done():
			t.Fatal("watch did not deliver the put made after Restart")
		}
	}
}

func TestStartAgainOnExistingDir(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t)

	s1, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(dir))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	cli1, err := clientv3.New(clientv3.Config{Endpoints: s1.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	if _, err := cli1.Put(ctx, "k", "kept"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	cli1.Close()
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// New ports this time: the member restarts from its WAL regardless.
	s2 := startServer(t, etcdembed.DefaultConfig(dir))
	if got := mustGet(t, ctx, newClient(t, s2), "k"); got != "kept" {
		t.Fatalf("Get = %q, want kept", got)
	}
}

func TestCloseTwiceAndRestartAfterClose(t *testing.T) {
	s := startServer(t, etcdembed.DefaultConfig(t.TempDir()))
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Restart(testContext(t)); !errors.Is(err, etcdembed.ErrClosed) {
		t.Fatalf("Restart after Close = %v, want ErrClosed", err)
	}
	// Closed means the port is released.
	host := strings.TrimPrefix(s.ClientURL(), "http://")
	l, err := net.Listen("tcp", host)
	if err != nil {
		t.Fatalf("client port still bound after Close: %v", err)
	}
	l.Close()
}

func TestAddressInUse(t *testing.T) {
	first := startServer(t, etcdembed.DefaultConfig(t.TempDir()))
	taken := strings.TrimPrefix(first.ClientURL(), "http://")

	for _, tc := range []struct {
		role string
		cfg  func(*etcdembed.Config)
	}{
		{"client", func(c *etcdembed.Config) { c.ClientAddr = taken }},
		{"peer", func(c *etcdembed.Config) { c.PeerAddr = taken }},
	} {
		t.Run(tc.role, func(t *testing.T) {
			cfg := etcdembed.DefaultConfig(t.TempDir())
			tc.cfg(&cfg)
			s, err := etcdembed.Start(testContext(t), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Start on an occupied port succeeded")
			}
			var le *etcdembed.ListenError
			if !errors.As(err, &le) {
				t.Fatalf("Start error %v (%T), want *ListenError", err, err)
			}
			if le.Role != tc.role || le.Addr != taken || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("ListenError{Role: %q, Addr: %q, Err: %v}, want role %q, addr %q, EADDRINUSE", le.Role, le.Addr, le.Err, tc.role, taken)
			}
			if !strings.Contains(err.Error(), taken) {
				t.Fatalf("error %q does not name %s", err, taken)
			}
		})
	}
}

func TestDataDirNotUsable(t *testing.T) {
	// A path below a regular file cannot be created, even by root.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "data")
	_, err := etcdembed.Start(testContext(t), etcdembed.DefaultConfig(dir))
	var de *etcdembed.DataDirError
	if !errors.As(err, &de) || de.Path != dir {
		t.Fatalf("Start error %v, want *DataDirError for %s", err, dir)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("error %q does not name %s", err, dir)
	}
}

func TestValidate(t *testing.T) {
	dir := "/tmp/cellkit-etcd"
	for _, tc := range []struct {
		name    string
		cfg     etcdembed.Config
		wantErr string // substring; "" means valid
	}{
		{"default", etcdembed.DefaultConfig(dir), ""},
		{"zero except dir", etcdembed.Config{Dir: dir}, ""},
		{"fixed ports", etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:2379", PeerAddr: "127.0.0.1:2380"}, ""},
		{"localhost and ipv6", etcdembed.Config{Dir: dir, ClientAddr: "localhost:0", PeerAddr: "[::1]:0"}, ""},
		{"all interfaces", etcdembed.Config{Dir: dir, ClientAddr: "0.0.0.0:2379"}, ""},
		{"info level", etcdembed.Config{Dir: dir, LogLevel: "info"}, ""},
		{"no dir", etcdembed.Config{}, "Dir is required"},
		{"name with comma", etcdembed.Config{Dir: dir, Name: "a,b"}, "Name"},
		{"name with equals", etcdembed.Config{Dir: dir, Name: "a=b"}, "Name"},
		{"client no port", etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1"}, "ClientAddr"},
		{"client hostname", etcdembed.Config{Dir: dir, ClientAddr: "example.com:2379"}, "ClientAddr"},
		{"peer bad port", etcdembed.Config{Dir: dir, PeerAddr: "127.0.0.1:70000"}, "PeerAddr"},
		{"peer named port", etcdembed.Config{Dir: dir, PeerAddr: "127.0.0.1:http"}, "PeerAddr"},
		{"same address", etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:2379", PeerAddr: "127.0.0.1:2379"}, "both"},
		{"same address spelled differently", etcdembed.Config{Dir: dir, ClientAddr: "[::ffff:127.0.0.1]:2379", PeerAddr: "127.0.0.1:2379"}, "both"},
		{"bad log level", etcdembed.Config{Dir: dir, LogLevel: "loud"}, "LogLevel"},
		{"negative timeout", etcdembed.Config{Dir: dir, StartTimeout: -time.Second}, "StartTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, etcdembed.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestStartRejectsInvalidConfig(t *testing.T) {
	_, err := etcdembed.Start(context.Background(), etcdembed.Config{})
	if !errors.Is(err, etcdembed.ErrInvalidConfig) {
		t.Fatalf("Start(zero Config) = %v, want ErrInvalidConfig", err)
	}
}

func TestStartWithDoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(t.TempDir()))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start(cancelled ctx) = %v, want context.Canceled", err)
	}
}
