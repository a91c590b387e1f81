package router

import (
	"fmt"
	"testing"

	"github.com/cellkit/cellkit/clock/clocktest"
)

// Budget (docs/DESIGN.md): Lookup/Owner/Slot ≤ 25 ns/op and 0 allocs/op.

// Results go to a local and then to sinkInt: a global *Cell or Route sink
// would time the GC write barrier, not the lookup.
var sinkInt int

// benchTable is a sealed 1024-slot table of 4 cells with a 1000-entry
// whitelist and 100 frozen slots.
func benchTable(b *testing.B) *Table {
	b.Helper()
	tb, err := NewTable(1024)
	must(b, err)
	for i := 0; i < 4; i++ {
		must(b, tb.AddCell(Cell{ID: fmt.Sprintf("cell-%d", i), IDC: fmt.Sprintf("idc-%d", i%2), Endpoints: []string{fmt.Sprintf("10.0.%d.1:9000", i)}}))
		must(b, tb.Assign(SlotRange{i * 256, i*256 + 255}, fmt.Sprintf("cell-%d", i)))
	}
	for i := 0; i < 1000; i++ {
		must(b, tb.SetWhitelist(fmt.Sprintf("vip-%d", i), fmt.Sprintf("cell-%d", i%4)))
	}
	for i := 0; i < 100; i++ {
		must(b, tb.Freeze(SlotRange{i * 10, i * 10}, "cut-bench"))
	}
	must(b, tb.Validate())
	return tb.Seal()
}

// benchKeys mixes ordinary users with a few whitelisted ones (1 in 16).
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		if i%16 == 0 {
			keys[i] = fmt.Sprintf("vip-%d", i%1000)
		} else {
			keys[i] = fmt.Sprintf("user-%d", i*7919)
		}
	}
	return keys
}

func benchIDs(b *testing.B, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustID(b, "ord", t0.UnixMilli()+int64(i), Hash(fmt.Sprintf("user-%d", i)), uint64(i))
	}
	return ids
}

func BenchmarkSlot(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkInt = Slot("user-12345", 1024)
	}
}

func BenchmarkKeySlot(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkInt = KeySlot("user-12345", 1024)
	}
}

func BenchmarkKeySlotID(b *testing.B) {
	id := benchIDs(b, 1)[0]
	b.ReportAllocs()
	for b.Loop() {
		sinkInt = KeySlot(id, 1024)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := benchTable(b)
	keys := benchKeys(1024)
	b.ReportAllocs()
	i, n := 0, 0
	for b.Loop() {
		r := tb.Lookup(keys[i&1023])
		n += r.Slot
		i++
	}
	sinkInt = n
}

func BenchmarkOwner(b *testing.B) {
	tb := benchTable(b)
	keys := benchKeys(1024)
	b.ReportAllocs()
	i, n := 0, 0
	for b.Loop() {
		if tb.Owner(keys[i&1023]) != nil {
			n++
		}
		i++
	}
	sinkInt = n
}

func BenchmarkLookupID(b *testing.B) {
	tb := benchTable(b)
	ids := benchIDs(b, 1024)
	b.ReportAllocs()
	i, n := 0, 0
	for b.Loop() {
		r := tb.Lookup(ids[i&1023])
		n += r.Slot
		i++
	}
	sinkInt = n
}

func BenchmarkParseID(b *testing.B) {
	id := benchIDs(b, 1)[0]
	b.ReportAllocs()
	for b.Loop() {
		info, _ := ParseID(id)
		sinkInt = int(info.Entropy)
	}
}

func BenchmarkNewID(b *testing.B) {
	g := NewIDGenerator(clocktest.New(t0), newSeqReader(1))
	b.ReportAllocs()
	for b.Loop() {
		id, _ := g.New("ord", "user-12345")
		sinkInt = len(id)
	}
}

func BenchmarkDecode1024(b *testing.B) {
	data := mustEncode(b, benchTable(b))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
