package etcdcell_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
)

// startProxy runs an in-process toxiproxy proxy from a free loopback port
// to upstream (host:port).
func startProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(api, "etcd", "127.0.0.1:0", upstream)
	must(t, p.Start())
	t.Cleanup(p.Stop)
	return p
}

// TestSelfFencing cuts a guard instance off from etcd (its client goes
// through a proxy that is stopped) while writes keep coming, and shows the
// DESIGN's self-fencing rule: the instance fences itself within the lease
// TTL, before etcd drops its ack; it admits nothing from then on; once etcd
// is reachable again it registers anew and admits again.
func TestSelfFencing(t *testing.T) {
	srv := etcdtest.Start(t)
	admin := dial(t, srv.Endpoints()...)
	createMap(t, admin)
	u, err := url.Parse(srv.ClientURL())
	must(t, err)
	proxy := startProxy(t, u.Host)
	cli := dial(t, "http://"+proxy.Listen)

	const ttl, margin = 2 * time.Second, 500 * time.Millisecond
	var log admission.Log
	cs := serveCell(t, register(t, cli, "a1", "a1-0", func(c *etcdcell.Config) {
		c.LeaseTTL, c.FenceMargin = ttl, margin
	}), &log)
	in := cs.inst
	firstLease := in.Lease()
	key := keyIn(5)

	// One writer, back to back, for the whole test.
	var (
		mu      sync.Mutex
		results []writeResult
		n       atomic.Int64
	)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			sent := time.Now()
			_, err := cs.credit(ctx, key, fmt.Sprint("w", n.Add(1)))
			cancel()
			mu.Lock()
			results = append(results, writeResult{sent: sent, err: err})
			mu.Unlock()
		}
	}()
	admittedSince := func(at time.Time) bool {
		for _, r := range log.Records() {
			if r.Start.After(at) {
				return true
			}
		}
		return false
	}
	eventually(t, "a write admitted before the cut", func() bool { return admittedSince(time.Time{}) })

	// Cut.
	cut := time.Now()
	proxy.Stop()
	var fencedAt time.Time
	eventually(t, "the instance to fence itself", func() bool {
		if in.Ready() {
			return false
		}
		fencedAt = time.Now()
		return true
	})
	t.Logf("cut -> fenced: %v (lease TTL %v, margin %v)", fencedAt.Sub(cut), ttl, margin)
	if d := fencedAt.Sub(cut); d > ttl {
		t.Errorf("fenced %v after the cut, later than the lease TTL %v", d, ttl)
	}
	var fe *cell.FencedError
	if err := in.Guard().Fence().Check(); !errors.As(err, &fe) {
		t.Fatalf("fence check %v", err)
	}
	t.Logf("fence reason: %s", fe.Reason)

	// The ack outlives the fence and then expires with the lease.
	eventually(t, "the ack to expire", func() bool { return !exists(t, admin, ackKey("a1", "a1-0")) })
	ackGone := time.Now()
	t.Logf("cut -> ack gone from etcd: %v; fenced %v before that", ackGone.Sub(cut), ackGone.Sub(fencedAt))
	if !fencedAt.Before(ackGone) {
		t.Errorf("ack gone at %v, before the instance fenced at %v", ackGone, fencedAt)
	}
	if exists(t, admin, endpointKey("a1", "a1-0")) {
		t.Error("endpoint outlived the lease")
	}
	// Writes went on all along and were refused with FENCED.
	eventually(t, "a refused write after the ack expired", func() bool {
		mu.Lock()
		defer mu.Unlock()
		last := results[len(results)-1]
		return last.sent.After(ackGone) && errors.Is(wire.FromGRPC(last.err), cell.ErrFenced)
	})
	for _, r := range log.Records() {
		if r.Start.After(fencedAt) {
			t.Errorf("admitted after the fence: %v", r)
		}
	}

	// Heal: the instance registers again, on a new lease, and admits.
	healed := time.Now()
	must(t, proxy.Start())
	eventually(t, "a write admitted after the heal", func() bool { return admittedSince(healed) })
	t.Logf("heal -> admitting again: %v (registrations %d)", time.Since(healed), in.Registrations())
	if !in.Ready() || in.Registrations() < 2 || in.Lease() == firstLease {
		t.Fatalf("after heal: ready %v, registrations %d, lease %x (first %x)", in.Ready(), in.Registrations(), in.Lease(), firstLease)
	}
	resp, err := admin.Get(ctxT(t), ackKey("a1", "a1-0"))
	must(t, err)
	if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != in.Lease() {
		t.Fatalf("ack after heal: %v", resp.Kvs)
	}
	close(stop)
	<-writerDone

	mu.Lock()
	defer mu.Unlock()
	var fenced, ok, other int
	for _, r := range results {
		switch {
		case r.err == nil:
			ok++
		case errors.Is(wire.FromGRPC(r.err), cell.ErrFenced):
			fenced++
		default:
			other++
			t.Errorf("write sent at %v: %v", r.sent.Sub(cut), r.err)
		}
	}
	t.Logf("writes: %d admitted, %d refused FENCED, %d other", ok, fenced, other)
}

type writeResult struct {
	sent time.Time
	err  error
}
