package sqlmove

import (
	"fmt"
	"testing"

	"github.com/cellkit/cellkit/failover"
)

// BenchmarkCopy measures copy throughput between two cells' databases
// (SQLite files; two databases on one MariaDB server): 64 slots of about
// 220 rows each (40 users per slot: an account, orders and their ledger
// legs), copied into an empty target and verified, per iteration. rows/s
// counts the rows moved.
//
//	go test ./infra/sqlmove -run '^$' -bench 'Copy/sqlite' -benchtime 10x
func BenchmarkCopy(b *testing.B) {
	for _, be := range backends[:2] {
		b.Run(be.name, func(b *testing.B) {
			open := be.start(b)
			for _, batch := range []int{100, 500, 2000} {
				b.Run(fmt.Sprint("batch-", batch), func(b *testing.B) { benchCopy(b, open, batch) })
			}
		})
	}
}

func benchCopy(b *testing.B, open opener, batch int) {
	// 40 users in each moving slot, 2 in the others.
	users := func(s int) int { return map[bool]int{true: 40, false: 2}[s < 64] }
	e := newEnvFill(b, open, threeCells(b), users, func(c *Config) { c.BatchRows = batch })
	mv := slots(0, 63, "a1", "b1")
	e.maps.apply(b, failover.OpFreeze, "bench", mv)
	var rows int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for _, tb := range testTables {
			_, err := e.cells["b1"].DB.ExecContext(ctxT(b), "DELETE FROM "+tb.Name+" WHERE slot BETWEEN 0 AND 63")
			must(b, err)
		}
		b.StartTimer()
		r, err := e.mover.Copy(ctxT(b), "bench", mv)
		must(b, err)
		rows += r.Pairs[0].Rows
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
