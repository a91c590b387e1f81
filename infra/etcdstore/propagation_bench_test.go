package etcdstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/router"
)

// BenchmarkMapPropagation100 measures the time from a committed map update
// (Update returned) to its installation in each of 100 watchers, the way
// routers, SDKs and guards hold the map. The 100 watchers share 10 etcd
// clients (as 10 processes with 10 watchers each would). It reports the
// p50, p99 and max over all (update, watcher) pairs.
//
//	go test -run '^$' -bench MapPropagation -benchtime 50x ./infra/etcdstore/
func BenchmarkMapPropagation100(b *testing.B) {
	const watchers, clients = 100, 10
	ctx := context.Background()
	srv := etcdtest.Start(b)
	writer := etcdtest.Store(b, etcdtest.Client(b, srv), "bench")
	if _, err := writer.Create(ctx, "bench", etcdtest.TwoCellMap(b, 1024)); err != nil {
		b.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[uint64][]time.Time{}  // epoch -> install times
	all := map[uint64]chan struct{}{} // epoch -> closed when every watcher has it
	allOf := func(e uint64) chan struct{} {
		if all[e] == nil {
			all[e] = make(chan struct{})
		}
		return all[e]
	}
	for c := 0; c < clients; c++ {
		st := etcdtest.Store(b, etcdtest.Client(b, srv), "bench")
		for w := 0; w < watchers/clients; w++ {
			wt := router.NewWatcher(st, router.WatcherConfig{OnUpdate: func(_, t *router.Table) {
				now := time.Now()
				mu.Lock()
				seen[t.Epoch()] = append(seen[t.Epoch()], now)
				if len(seen[t.Epoch()]) == watchers {
					close(allOf(t.Epoch()))
				}
				mu.Unlock()
			}})
			if err := wt.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer wt.Close()
		}
	}

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next, err := writer.Update(ctx, "bench", func(t *router.Table) error {
			return t.SetWhitelist(fmt.Sprint("u", i), []string{"a1", "b1"}[i%2])
		})
		committed := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		done := allOf(next.Epoch())
		mu.Unlock()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatalf("epoch %d did not reach all %d watchers in 30s", next.Epoch(), watchers)
		}
		mu.Lock()
		for _, at := range seen[next.Epoch()] {
			lat = append(lat, max(0, at.Sub(committed)))
		}
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
}
