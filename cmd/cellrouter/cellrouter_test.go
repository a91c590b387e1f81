package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/router"
)

func TestMain(m *testing.M) {
	if os.Getenv("CELLROUTER_TEST_MAIN") == "1" {
		main() // the test binary as cellrouter, for the signal test
		return
	}
	goleak.VerifyTestMain(m)
}

func noEnv(string) (string, bool) { return "", false }

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `
listen: {http: "127.0.0.1:18080", admin: "127.0.0.1:19090"}
etcd: {endpoints: ["http://10.0.0.1:2379"], dialTimeout: 3s}
cluster: prod
discovery:
  mode: static
  static: [{cell: a1, id: a1-0, http: "127.0.0.1:7001", grpc: "127.0.0.1:7002"}]
log: {level: debug, format: text}
http:
  routes:
    - prefix: /v1/
      keys: [{header: X-User-Id}, {path: "/v1/*/{key}"}]
grpc: {metadata: [x-user-id]}
buffer: {maxPerSlot: 8, timeout: 1500ms}
redirectWait: 2s
`)
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		want  []string // error substrings; nil: valid
		check func(t *testing.T, c Config)
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if c.Listen != (ListenConfig{HTTP: ":8080", GRPC: ":8081", Admin: ":9090"}) || c.Etcd.Endpoints[0] != "http://127.0.0.1:2379" || c.Cluster != "default" ||
				c.Discovery.Mode != "etcd" || c.Buffer.MaxPerSlot != 256 || c.HTTP.Routes[0].Keys[0].Header != "X-Route-Key" {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{name: "file", args: []string{"--config", good}, check: func(t *testing.T, c Config) {
			if c.Listen.HTTP != "127.0.0.1:18080" || c.Listen.GRPC != ":8081" || c.Cluster != "prod" || c.Etcd.DialTimeout.D() != 3*time.Second ||
				c.Buffer.MaxPerSlot != 8 || c.Buffer.Timeout.D() != 1500*time.Millisecond || c.RedirectWait.D() != 2*time.Second ||
				c.Discovery.Static[0].GRPCAddr != "127.0.0.1:7002" || c.HTTP.Routes[0].Keys[1].Path != "/v1/*/{key}" || c.Log.Format != "text" {
				t.Fatalf("file: %+v", c)
			}
		}},
		{name: "flags override file", args: []string{"--config", good, "--listen-http", ":1", "--listen-grpc", "", "--cluster", "other", "--etcd", "http://a:1, http://b:2", "--log-level", "warn"},
			check: func(t *testing.T, c Config) {
				if c.Listen.HTTP != ":1" || c.Listen.GRPC != "" || c.Cluster != "other" || len(c.Etcd.Endpoints) != 2 || c.Etcd.Endpoints[1] != "http://b:2" || c.Log.Level != "warn" {
					t.Fatalf("override: %+v", c)
				}
			}},
		{name: "pprof", args: []string{"--config", write("pprof.yaml", "listen: {pprof: true}\n")}, check: func(t *testing.T, c Config) {
			if !c.Listen.Pprof {
				t.Fatal("listen.pprof not read")
			}
		}},
		{name: "client timeouts", args: []string{"--config", write("timeouts.yaml", "http: {idleTimeout: 30s, readHeaderTimeout: 2s}\n")}, check: func(t *testing.T, c Config) {
			if c.HTTP.IdleTimeout.D() != 30*time.Second || c.HTTP.ReadHeaderTimeout.D() != 2*time.Second {
				t.Fatalf("http timeouts not read: %v %v", c.HTTP.IdleTimeout.D(), c.HTTP.ReadHeaderTimeout.D())
			}
		}},
		{name: "pprof flag off beats file", args: []string{"--config", write("pprof2.yaml", "listen: {pprof: true}\n"), "--pprof=false"}, check: func(t *testing.T, c Config) {
			if c.Listen.Pprof {
				t.Fatal("--pprof=false ignored")
			}
		}},
		{name: "env", env: map[string]string{envEtcd: "http://e:1", envCluster: "envc"}, check: func(t *testing.T, c Config) {
			if c.Etcd.Endpoints[0] != "http://e:1" || c.Cluster != "envc" {
				t.Fatalf("env: %+v", c)
			}
		}},
		{name: "flag beats env", args: []string{"--cluster", "flagc"}, env: map[string]string{envCluster: "envc"}, check: func(t *testing.T, c Config) {
			if c.Cluster != "flagc" {
				t.Fatalf("cluster %q", c.Cluster)
			}
		}},
		{name: "unknown field", args: []string{"--config", write("unknown.yaml", "listen: {htp: x}\n")}, want: []string{`unknown field "htp"`}},
		{name: "bad yaml", args: []string{"--config", write("bad.yaml", "listen: [\n")}, want: []string{"bad.yaml"}},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, want: []string{"no such file"}},
		{name: "bad duration", args: []string{"--config", write("dur.yaml", "buffer: {timeout: soon}\n")}, want: []string{`duration "soon"`}},
		{name: "unknown flag", args: []string{"--bogus"}, want: []string{"bogus"}},
		{name: "positional", args: []string{"serve"}, want: []string{"unexpected arguments"}},
		{name: "bad listen", args: []string{"--listen-http", "8080"}, want: []string{`listen.http (--listen-http) "8080": want host:port`}},
		{name: "same addresses", args: []string{"--listen-http", ":7000", "--admin", ":7000"}, want: []string{`listen.admin (--admin) ":7000": already used by listen.http`}},
		{name: "nothing to proxy", args: []string{"--listen-http", "", "--listen-grpc", ""}, want: []string{"nothing to proxy"}},
		{name: "bad etcd", args: []string{"--etcd", "ftp://x"}, want: []string{`etcd (--etcd): etcd endpoint "ftp://x"`}},
		{name: "bad cluster", args: []string{"--cluster", "Prod!"}, want: []string{`cluster (--cluster) "Prod!"`}},
		{name: "bad discovery", args: []string{"--discovery", "consul"}, want: []string{`discovery.mode (--discovery) "consul"`}},
		{name: "static without list", args: []string{"--discovery", "static"}, want: []string{"needs at least one instance"}},
		{name: "bad log", args: []string{"--log-level", "loud", "--log-format", "xml"}, want: []string{`log.level (--log-level) "loud"`, `log.format (--log-format) "xml"`}},
		{name: "gateway problems", args: []string{"--config", write("gw.yaml", "http: {routes: [{prefix: /a, keys: [{header: Cellkit-Key}]}]}\nbuffer: {maxPerSlot: 9, maxTotal: 3}\n")},
			want: []string{"http.routes[0].keys[0]: header \"Cellkit-Key\"", "buffer.maxPerSlot 9 is more than buffer.maxTotal 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			c, err := loadConfig(tc.args, env)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--log-level", "loud"}, &out, noEnv); code != exitUsage || !strings.Contains(out.String(), "log.level") {
		t.Fatalf("config error: exit %d, %s", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"-h"}, &out, noEnv); code != exitOK || !strings.Contains(out.String(), "Usage: cellrouter") {
		t.Fatalf("help: exit %d, %s", code, out.String())
	}
	// A cluster without a map: runtime error naming the fix.
	srv := etcdtest.Start(t)
	out.Reset()
	code := run(context.Background(), []string{"--etcd", srv.ClientURL(), "--cluster", "empty", "--discovery", "map",
		"--listen-http", "127.0.0.1:0", "--listen-grpc", "", "--admin", ""}, &out, noEnv)
	if code != exitRuntime || !strings.Contains(out.String(), "cellctl map init") {
		t.Fatalf("no map: exit %d, %s", code, out.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
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

// The binary end to end: a map in etcd whose cell endpoint is a backend,
// a request routed to it with the router's key stamped, then SIGTERM: a
// drain and exit 0.
func TestServeAndSIGTERM(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var seenKey sync.Map
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenKey.Store(r.Header.Get("Cellkit-Key"), true)
		fmt.Fprint(w, "hello from a1")
	})}
	bl := listenT(t)
	go func() { _ = backend.Serve(bl) }()
	defer backend.Close()

	store := etcdtest.Store(t, etcdtest.Client(t, srv), "e2e")
	tb, _ := router.NewTable(256)
	if err := tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive, Endpoints: []string{"http://" + bl.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, "e2e", tb); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "--etcd", srv.ClientURL(), "--cluster", "e2e", "--discovery", "map",
		"--listen-http", "127.0.0.1:0", "--listen-grpc", "", "--admin", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "CELLROUTER_TEST_MAIN=1")
	var logs syncBuffer
	cmd.Stderr = &logs // Wait waits until everything written is copied
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	rec := servingRecord(t, &logs)
	httpAddr, adminAddr := rec["http"].(string), rec["admin"].(string)

	waitReady(t, adminAddr, &logs)
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/anything", nil)
	req.Header.Set("X-Route-Key", "u42")
	req.Header.Set("Cellkit-Key", "forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != 200 || string(body) != "hello from a1" {
		t.Fatalf("routed request: %d %q", resp.StatusCode, body)
	}
	if _, ok := seenKey.Load("u42"); !ok {
		t.Fatal("backend did not see the router's cellkit-key u42")
	}
	if _, ok := seenKey.Load("forged"); ok {
		t.Fatal("backend saw the forged key")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), `"msg":"drained"`) {
		t.Fatalf("no drain logged:\n%s", logs.String())
	}
}

func listenT(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// servingRecord waits for cellrouter's "cellrouter serving" log record.
func servingRecord(t *testing.T, logs *syncBuffer) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "cellrouter serving" {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cellrouter did not start:\n%s", logs.String())
		}
	}
}

func waitReady(t *testing.T, adminAddr string, logs *syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				http.DefaultClient.CloseIdleConnections()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready:\n%s", logs.String())
		}
	}
}

// The default discovery: instances registered in etcd by infra/etcdcell,
// guarded by cell/httpguard; cellrouter run in-process, drained by ending
// its context.
func TestRunWithEtcdDiscovery(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := etcdtest.Client(t, srv)
	store := etcdtest.Store(t, cli, "disc")
	tb, _ := router.NewTable(256)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1")
	if _, err := store.Create(ctx, "disc", tb); err != nil {
		t.Fatal(err)
	}

	bl := listenT(t)
	icfg := etcdcell.Local("a1", "a1-0")
	icfg.Cluster, icfg.HTTPAddr = "disc", bl.Addr().String()
	icfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	inst, err := etcdcell.Register(ctx, cli, icfg)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	guard, err := httpguard.New(inst.Guard(), httpguard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: guard.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "a1 admitted "+r.Header.Get("Cellkit-Key"))
	}))}
	go func() { _ = backend.Serve(bl) }()
	defer backend.Close()

	var logs syncBuffer
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan int, 1)
	go func() {
		done <- run(rctx, []string{"--etcd", srv.ClientURL(), "--cluster", "disc", "--listen-http", "127.0.0.1:0", "--listen-grpc", "", "--admin", "127.0.0.1:0"}, &logs, noEnv)
	}()
	rec := servingRecord(t, &logs)
	if rec["discovery"] != "etcd" {
		t.Fatalf("discovery %v, want etcd", rec["discovery"])
	}
	waitReady(t, rec["admin"].(string), &logs)
	req, _ := http.NewRequest(http.MethodGet, "http://"+rec["http"].(string)+"/x", nil)
	req.Header.Set("X-Route-Key", "u7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != 200 || string(body) != "a1 admitted u7" {
		t.Fatalf("routed: %d %q", resp.StatusCode, body)
	}
	stop()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after its context ended:\n%s", logs.String())
	}
}
