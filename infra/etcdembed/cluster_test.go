package etcdembed_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellkit/cellkit/infra/etcdembed"
)

// electionTimeout bounds the wait for a new leader after the old one stops:
// etcd's election timeout is 1s, and a stopping leader hands over at once.
const electionTimeout = 10 * time.Second

func startCluster(t *testing.T, cfg etcdembed.ClusterConfig) *etcdembed.Cluster {
	t.Helper()
	c, err := etcdembed.StartCluster(testContext(t), cfg)
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func clusterClient(t *testing.T, c *etcdembed.Cluster) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func leader(t *testing.T, ctx context.Context, c *etcdembed.Cluster) int {
	t.Helper()
	i, err := c.Leader(ctx)
	if err != nil {
		t.Fatalf("Leader: %v", err)
	}
	return i
}

// getSerializable reads key from whichever member the client reaches,
// without a quorum, retrying while the client notices stopped members.
func getSerializable(t *testing.T, ctx context.Context, cli *clientv3.Client, key string) string {
	t.Helper()
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cli.Get(attempt, key, clientv3.WithSerializable())
		cancel()
		if err == nil && len(resp.Kvs) == 1 {
			return string(resp.Kvs[0].Value)
		}
		if ctx.Err() != nil {
			t.Fatalf("serializable Get %q never succeeded: %v", key, err)
		}
		t.Logf("serializable Get %q: %v (retrying)", key, err)
	}
}

// followedBy returns the member ID that member i's Maintenance.Status names
// as leader, and member i's own ID.
func followedBy(t *testing.T, ctx context.Context, cli *clientv3.Client, c *etcdembed.Cluster, i int) (leader, self uint64) {
	t.Helper()
	st, err := cli.Status(ctx, c.Member(i).ClientURL())
	if err != nil {
		t.Fatalf("Status of member %d: %v", i, err)
	}
	return st.Leader, st.Header.MemberId
}

func TestClusterFailoverAndQuorumLoss(t *testing.T) {
	c := startCluster(t, etcdembed.DefaultClusterConfig(t.TempDir()))
	ctx := testContext(t)

	eps := c.Endpoints()
	if c.Size() != 3 || len(eps) != 3 {
		t.Fatalf("Size() = %d, Endpoints() = %q; want 3 members", c.Size(), eps)
	}
	seen := map[string]bool{}
	for i, ep := range eps {
		m := c.Member(i)
		if !endpointRE.MatchString(ep) || seen[ep] || m.ClientURL() != ep || m.Name() != fmt.Sprintf("m%d", i) || !c.Running(i) {
			t.Fatalf("member %d: endpoint %q (all %q), ClientURL %q, Name %q, Running %v", i, ep, eps, m.ClientURL(), m.Name(), c.Running(i))
		}
		seen[ep] = true
	}

	cli := clusterClient(t, c)
	if _, err := cli.Put(ctx, "k1", "before"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := mustGet(t, ctx, cli, "k1"); got != "before" {
		t.Fatalf("Get k1 = %q, want before", got)
	}

	// The leader goes; the other two elect one of themselves.
	first := leader(t, ctx, c)
	if lead, self := followedBy(t, ctx, cli, c, first); lead != self {
		t.Fatalf("Leader() = %d, but its Status names leader %x, itself %x", first, lead, self)
	}
	if err := c.Stop(first); err != nil {
		t.Fatalf("Stop(%d): %v", first, err)
	}
	if err := c.Stop(first); err != nil {
		t.Fatalf("second Stop(%d): %v", first, err)
	}
	if c.Running(first) {
		t.Fatalf("Running(%d) after Stop", first)
	}
	electCtx, cancel := context.WithTimeout(ctx, electionTimeout)
	second, err := c.Leader(electCtx)
	cancel()
	if err != nil {
		t.Fatalf("no new leader after stopping leader %d: %v", first, err)
	}
	if second == first {
		t.Fatalf("Leader() = %d, the stopped member", second)
	}
	t.Logf("leader %d stopped, %d leads", first, second)
	putEventually(t, ctx, cli, "k2", "after-failover")

	// A second member goes: no quorum, so writes fail and only
	// serializable reads from the survivor work. First let the survivor
	// apply k2: a follower learns that an entry is committed with the
	// leader's next message, and the leader is about to stop.
	survivor := 3 - first - second
	scli, err := clientv3.New(clientv3.Config{Endpoints: c.Member(survivor).Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer scli.Close()
	if got := getSerializable(t, ctx, scli, "k2"); got != "after-failover" {
		t.Fatalf("serializable Get k2 on the survivor = %q", got)
	}
	if err := c.Stop(second); err != nil {
		t.Fatalf("Stop(%d): %v", second, err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = cli.Put(short, "k-no-quorum", "x")
	cancel()
	if err == nil {
		t.Fatal("Put succeeded with one member of three running")
	}
	t.Logf("Put without quorum: %v", err)
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = c.Leader(short)
	cancel()
	if !errors.Is(err, etcdembed.ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Leader() without quorum: %v, want ErrNoLeader and DeadlineExceeded", err)
	}
	if got := getSerializable(t, ctx, cli, "k2"); got != "after-failover" {
		t.Fatalf("serializable Get k2 = %q, want after-failover", got)
	}

	// The old leader comes back first, from its data: quorum again.
	if err := c.Start(ctx, first); err != nil {
		t.Fatalf("Start(%d): %v", first, err)
	}
	if !c.Running(first) {
		t.Fatalf("Running(%d) = false after Start", first)
	}
	putEventually(t, ctx, cli, "k3", "quorum-back")
	if err := c.Start(ctx, second); err != nil {
		t.Fatalf("Start(%d): %v", second, err)
	}
	if err := c.Start(ctx, second); err != nil {
		t.Fatalf("Start(%d) of a running member: %v", second, err)
	}
	for k, want := range map[string]string{"k1": "before", "k2": "after-failover", "k3": "quorum-back"} {
		if got := mustGet(t, ctx, cli, k); got != want {
			t.Fatalf("Get %s = %q, want %q", k, got, want)
		}
	}
	// It missed writes, so it cannot win an election: it follows.
	now := leader(t, ctx, c)
	if now == first {
		t.Fatalf("Leader() = %d, the old leader that missed writes", now)
	}
	for i := range c.Size() {
		if !c.Running(i) {
			t.Fatalf("Running(%d) = false", i)
		}
		lead, self := followedBy(t, ctx, cli, c, i)
		if _, want := followedBy(t, ctx, cli, c, now); lead != want {
			t.Fatalf("member %d (%x) follows %x, want the leader %d (%x)", i, self, lead, now, want)
		}
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Start(ctx, first); !errors.Is(err, etcdembed.ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	for i, ep := range eps {
		if c.Running(i) {
			t.Fatalf("Running(%d) after Close", i)
		}
		l, err := net.Listen("tcp", strings.TrimPrefix(ep, "http://"))
		if err != nil {
			t.Fatalf("member %d client port still bound after Close: %v", i, err)
		}
		l.Close()
	}
}

func TestClusterStartAgainOnDir(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t)

	c, err := etcdembed.StartCluster(ctx, etcdembed.DefaultClusterConfig(dir))
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	eps := c.Endpoints()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	if _, err := cli.Put(ctx, "k", "kept"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	cli.Close()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	_, err = etcdembed.StartCluster(ctx, etcdembed.ClusterConfig{Dir: dir, Members: 5})
	if !errors.Is(err, etcdembed.ErrInvalidConfig) {
		t.Fatalf("StartCluster with another member count = %v, want ErrInvalidConfig", err)
	}
	_, err = etcdembed.StartCluster(ctx, etcdembed.ClusterConfig{Dir: dir, Host: "127.0.0.2"})
	if !errors.Is(err, etcdembed.ErrInvalidConfig) {
		t.Fatalf("StartCluster with another host = %v, want ErrInvalidConfig", err)
	}

	// Zero Members means what Dir holds; the addresses are those recorded.
	c2 := startCluster(t, etcdembed.ClusterConfig{Dir: dir})
	if got := c2.Endpoints(); strings.Join(got, ",") != strings.Join(eps, ",") {
		t.Fatalf("Endpoints() = %q, want %q as before", got, eps)
	}
	if got := mustGet(t, ctx, clusterClient(t, c2), "k"); got != "kept" {
		t.Fatalf("Get = %q, want kept", got)
	}
}

func TestClusterOfOne(t *testing.T) {
	c := startCluster(t, etcdembed.ClusterConfig{Dir: t.TempDir(), Members: 1})
	ctx := testContext(t)
	if c.Size() != 1 || leader(t, ctx, c) != 0 {
		t.Fatalf("Size() = %d; want 1 member leading", c.Size())
	}
	if err := c.Stop(0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.Leader(short); !errors.Is(err, etcdembed.ErrNoLeader) {
		t.Fatalf("Leader() with the member stopped = %v, want ErrNoLeader", err)
	}
	if err := c.Start(ctx, 0); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if got := leader(t, ctx, c); got != 0 {
		t.Fatalf("Leader() = %d, want 0", got)
	}
}

func TestClusterRefusesMembersWithoutLayout(t *testing.T) {
	dir := t.TempDir()
	m1 := filepath.Join(dir, "m1")
	if err := os.MkdirAll(filepath.Join(m1, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := etcdembed.StartCluster(testContext(t), etcdembed.ClusterConfig{Dir: dir})
	var de *etcdembed.DataDirError
	if !errors.As(err, &de) || de.Path != m1 {
		t.Fatalf("StartCluster = %v, want *DataDirError for %s", err, m1)
	}
}

func TestClusterConfigValidate(t *testing.T) {
	dir := "/tmp/cellkit-etcd-cluster"
	for _, tc := range []struct {
		name    string
		cfg     etcdembed.ClusterConfig
		wantErr string // substring; "" means valid
	}{
		{"default", etcdembed.DefaultClusterConfig(dir), ""},
		{"zero except dir", etcdembed.ClusterConfig{Dir: dir}, ""},
		{"one", etcdembed.ClusterConfig{Dir: dir, Members: 1}, ""},
		{"seven", etcdembed.ClusterConfig{Dir: dir, Members: 7}, ""},
		{"localhost", etcdembed.ClusterConfig{Dir: dir, Host: "localhost"}, ""},
		{"ipv6", etcdembed.ClusterConfig{Dir: dir, Host: "::1"}, ""},
		{"no dir", etcdembed.ClusterConfig{}, "Dir is required"},
		{"negative members", etcdembed.ClusterConfig{Dir: dir, Members: -1}, "Members"},
		{"eight", etcdembed.ClusterConfig{Dir: dir, Members: 8}, "Members"},
		{"hostname", etcdembed.ClusterConfig{Dir: dir, Host: "example.com"}, "Host"},
		{"host with port", etcdembed.ClusterConfig{Dir: dir, Host: "127.0.0.1:2379"}, "Host"},
		{"bad log level", etcdembed.ClusterConfig{Dir: dir, LogLevel: "loud"}, "LogLevel"},
		{"negative timeout", etcdembed.ClusterConfig{Dir: dir, StartTimeout: -time.Second}, "StartTimeout"},
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

func TestValidateInitialCluster(t *testing.T) {
	base := etcdembed.Config{Dir: "/tmp/cellkit-etcd", Name: "a", PeerAddr: "127.0.0.1:2380"}
	for _, tc := range []struct {
		name    string
		mod     func(*etcdembed.Config)
		wantErr string // substring; "" means valid
	}{
		{"three", func(c *etcdembed.Config) {
			c.InitialCluster = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2382,c=http://127.0.0.1:2384"
		}, ""},
		{"with token", func(c *etcdembed.Config) {
			c.InitialCluster, c.InitialClusterToken = "a=http://127.0.0.1:2380", "t1"
		}, ""},
		{"not named", func(c *etcdembed.Config) { c.InitialCluster = "b=http://127.0.0.1:2382" }, "does not name"},
		{"bad url", func(c *etcdembed.Config) { c.InitialCluster = "a=127.0.0.1:2380" }, "InitialCluster"},
		{"peer port 0", func(c *etcdembed.Config) {
			c.InitialCluster, c.PeerAddr = "a=http://127.0.0.1:2380", "127.0.0.1:0"
		}, "fixed peer port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			err := cfg.Validate()
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

func ExampleStartCluster() {
	dir, err := os.MkdirTemp("", "etcdembed-cluster-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdembed.StartCluster(ctx, etcdembed.DefaultClusterConfig(dir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/cellkit/dev/map", `{"epoch":1}`); err != nil {
		log.Fatal(err)
	}

	// The leader fails; the other two members elect a new one and carry on.
	lead, err := c.Leader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Stop(lead); err != nil {
		log.Fatal(err)
	}
	next, err := c.Leader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/cellkit/dev/map")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Size(), next != lead, string(resp.Kvs[0].Value))
	// Output: 3 true {"epoch":1}
}
