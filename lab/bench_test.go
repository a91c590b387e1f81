package lab

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
	"github.com/cellkit/cellkit/lab/load"
)

// BenchmarkPayments measures payments per second through cellrouter into
// four paycell cells (order + pay, with refunds, top-ups and withdrawals
// mixed in, every write idempotent and guarded), on SQLite books and on
// MariaDB books replicating between two servers with GTID + semi-sync.
// Each iteration runs the load for CELLKIT_BENCH_SECONDS (default 10)
// seconds with CELLKIT_BENCH_WORKERS (default 16) workers:
//
//	go test -run '^$' -bench Payments -benchtime 1x ./lab/
func BenchmarkPayments(b *testing.B) {
	secs, workers := envInt("CELLKIT_BENCH_SECONDS", 10), envInt("CELLKIT_BENCH_WORKERS", 16)
	b.Run("sqlite", func(b *testing.B) {
		benchPayments(b, Config{Dir: b.TempDir()}, secs, workers)
	})
	b.Run("mariadb-semisync", func(b *testing.B) {
		db := mysqllabtest.Start(b)
		ctx := context.Background()
		if err := db.CreateDatabase(ctx, "pay"); err != nil {
			b.Fatal(err)
		}
		benchPayments(b, Config{Dir: b.TempDir(), Mover: MoverGTID, Replicated: true, DSN: func(cell string) string {
			if cell[0] == 'a' {
				return db.DSN("idc-a", "pay")
			}
			return db.DSN("idc-b", "pay")
		}}, secs, workers)
	})
}

func benchPayments(b *testing.B, cfg Config, secs, workers int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	g, err := load.New(load.Config{BaseURL: l.RouterURL, Users: Users(1000), Workers: workers, InitialBalance: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var pays, failed int
	var took time.Duration
	var last load.Stats
	for range b.N {
		before := g.Stats()
		rctx, stop := context.WithTimeout(ctx, time.Duration(secs)*time.Second)
		last = g.Run(rctx)
		stop()
		pays += last.Payments - before.Payments
		failed += last.Failed - before.Failed
		took += time.Duration(secs) * time.Second
	}
	b.StopTimer()
	b.ReportMetric(float64(pays)/took.Seconds(), "payments/s")
	b.ReportMetric(float64(last.Latency.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(last.Latency.P99.Microseconds())/1000, "p99-ms")
	if failed > 0 {
		b.Errorf("%d operations failed", failed)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
