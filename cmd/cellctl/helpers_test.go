package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
)

// testTimeout bounds every wait in these tests; they poll, never sleep.
const testTimeout = 30 * time.Second

// startEtcd starts a real embedded etcd in a temporary directory on free
// ports and returns its client URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	return etcdtest.Start(t).ClientURL()
}

// rawClient is a plain etcd client, for writing what cellctl never would.
func rawClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// runResult is one cellctl invocation.
type runResult struct {
	code           int
	stdout, stderr string
}

// ctl runs cellctl in-process against one etcd and cluster, with an empty
// environment so the machine's CELLKIT_* variables cannot leak in.
type ctl struct {
	t       *testing.T
	etcd    string
	cluster string
	env     map[string]string
	stdin   string
	timeout time.Duration // per command; default testTimeout
}

func newCtl(t *testing.T, etcd string) *ctl {
	return &ctl{t: t, etcd: etcd, cluster: "test", env: map[string]string{}}
}

func (c *ctl) lookup(k string) (string, bool) { v, ok := c.env[k]; return v, ok }

// run runs cellctl with the global flags for c's etcd and cluster first.
func (c *ctl) run(args ...string) runResult {
	c.t.Helper()
	full := append([]string{"--etcd", c.etcd, "--cluster", c.cluster, "--actor", "tester"}, args...)
	return c.raw(full...)
}

// raw runs cellctl with exactly args.
func (c *ctl) raw(args ...string) runResult {
	c.t.Helper()
	timeout := testTimeout
	if c.timeout > 0 {
		timeout = c.timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errb bytes.Buffer
	code := runContext(ctx, args, c.lookup, strings.NewReader(c.stdin), &out, &errb)
	r := runResult{code: code, stdout: out.String(), stderr: errb.String()}
	c.t.Logf("cellctl %s -> %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// must runs cellctl and fails the test unless it exits 0.
func (c *ctl) must(args ...string) runResult {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("cellctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// fails runs cellctl and checks its exit code and that stderr mentions every
// one of wants, and that it never prints a Go stack trace.
func (c *ctl) fails(code int, wants []string, args ...string) runResult {
	c.t.Helper()
	r := c.run(args...)
	checkFailure(c.t, r, code, wants, args)
	return r
}

func checkFailure(t *testing.T, r runResult, code int, wants, args []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("cellctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "cellctl: ") {
		t.Errorf("cellctl %s: stderr %q does not start with \"cellctl: \"", strings.Join(args, " "), r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Errorf("cellctl %s: stderr has a stack trace:\n%s", strings.Join(args, " "), r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("cellctl %s: stderr does not mention %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, s, err)
	}
	return v
}

// closedPort returns an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// syncBuffer is a bytes.Buffer safe to read while cellctl writes to it.
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

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
