package reqfault

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/internal/testsvc"
)

// etcd is one embedded etcd for the package; tests keep apart by cluster.
var etcd etcdtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	etcd.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testTimeout bounds every wait; tests poll, never sleep to wait.
const testTimeout = 30 * time.Second

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test at testTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// clusterFor names a cluster after the test, so that tests sharing etcd
// keep apart.
func clusterFor(t testing.TB) string {
	c := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(c) > 63 {
		c = strings.TrimRight(c[:63], "-")
	}
	return c
}

// fresh returns a context, the shared etcd's client and a cluster for the
// test, with whatever an earlier run (-count) left under it deleted.
func fresh(t testing.TB) (context.Context, *clientv3.Client, string) {
	t.Helper()
	ctx, cli, cluster := ctxT(t), etcd.Client(t), clusterFor(t)
	_, err := cli.Delete(ctx, "/cellkit/"+cluster+"/", clientv3.WithPrefix())
	must(t, err)
	return ctx, cli, cluster
}

// logBuf is a slog destination that forwards to t.Log and keeps the text.
type logBuf struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{t: t}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// newInjector starts an injector for cluster, closed when the test ends.
func newInjector(t testing.TB, cli *clientv3.Client, cluster string, edit func(*Config)) (*Injector, *logBuf) {
	t.Helper()
	log, lb := testLogger(t)
	cfg := Config{Cluster: cluster, Client: cli, Cell: "a1", IDC: "IDC-A", Logger: log, RetryBackoff: 10 * time.Millisecond}
	if edit != nil {
		edit(&cfg)
	}
	inj, err := New(ctxT(t), cfg)
	must(t, err)
	t.Cleanup(inj.Close)
	return inj, lb
}

// service is the test ledger behind an injector, over HTTP and gRPC on
// loopback.
type service struct {
	httpURL string
	http    *http.Client
	grpc    *testsvc.Client
}

func serve(t testing.TB, inj *Injector) *service {
	t.Helper()
	ledger := testsvc.NewServer("a1")

	hs := httptest.NewServer(inj.HTTP(ledger.HTTPHandler()))
	t.Cleanup(hs.Close)
	// No keep-alive: a client retries a request on a fresh connection when
	// a reused one dies before answering, which would hide an abort.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(hc.CloseIdleConnections)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(inj.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(inj.StreamServerInterceptor()),
	)
	ledger.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { cc.Close() })
	return &service{httpURL: hs.URL, http: hc, grpc: testsvc.NewClient(cc)}
}

// httpResult is what an HTTP call came back with.
type httpResult struct {
	status int
	chaos  string // the Cellkit-Chaos header
	body   string
	err    error
}

func (s *service) do(ctx context.Context, method, path string, header http.Header) httpResult {
	req, err := http.NewRequestWithContext(ctx, method, s.httpURL+path, nil)
	if err != nil {
		return httpResult{err: err}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return httpResult{err: err}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return httpResult{status: resp.StatusCode, chaos: resp.Header.Get(chaosHeader), body: b.String(), err: err}
}

// exp returns an experiment expiring in an hour of real time (Put checks
// expiry against the real clock).
func exp(name string, edit func(*Experiment)) Experiment {
	e := Experiment{Name: name, Fraction: 1, ExpiresAt: time.Now().Add(time.Hour), Who: "tester", Why: "test"}
	if edit != nil {
		edit(&e)
	}
	return e
}

func names(exps []Experiment) []string {
	var out []string
	for _, e := range exps {
		out = append(out, e.Name)
	}
	return out
}
