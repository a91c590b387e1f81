package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// newTestTable returns a mutable 1024-slot table: a1 (idc-a) owns 0-511,
// b1 (idc-b) owns 512-1023, c1 (idc-c) owns nothing.
func newTestTable(t testing.TB) *Table {
	t.Helper()
	tb, err := NewTable(1024)
	if err != nil {
		t.Fatal(err)
	}
	tb.SetEpoch(7)
	must(t, tb.AddCell(Cell{ID: "a1", IDC: "idc-a", State: StateActive, Endpoints: []string{"10.0.0.1:9000"}}))
	must(t, tb.AddCell(Cell{ID: "b1", IDC: "idc-b", State: StateActive}))
	must(t, tb.AddCell(Cell{ID: "c1", IDC: "idc-c", State: StateDraining}))
	must(t, tb.Assign(SlotRange{0, 511}, "a1"))
	must(t, tb.Assign(SlotRange{512, 1023}, "b1"))
	return tb
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// keyInSlot returns a key "<prefix><n>" whose slot in a map of slotCount
// slots satisfies ok.
func keyInSlot(t testing.TB, prefix string, slotCount int, ok func(slot int) bool) string {
	t.Helper()
	for i := 0; i < 1<<20; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if ok(Slot(k, slotCount)) {
			return k
		}
	}
	t.Fatalf("no key with prefix %q in the wanted slots", prefix)
	return ""
}

// wantErr checks that err matches target with errors.Is and that its message
// contains every one of subs.
func wantErr(t testing.TB, err, target error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("err = %v, want errors.Is %v", err, target)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("err = %q, want it to mention %q", err, s)
		}
	}
}

func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("%s: did not panic", name)
			return
		}
		if !strings.Contains(fmt.Sprint(r), "sealed") {
			t.Errorf("%s: panic %v does not say the table is sealed", name, r)
		}
	}()
	f()
}

func mustEncode(t testing.TB, tb *Table) []byte {
	t.Helper()
	b, err := Encode(tb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustID(t testing.TB, kind string, ms int64, keyHash, entropy uint64) string {
	t.Helper()
	id, err := FormatID(kind, ms, keyHash, entropy)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// spoil returns id with its last body character changed to another valid
// base32 character, so the check byte no longer matches.
func spoil(id string) string {
	last := id[len(id)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return id[:len(id)-1] + string(repl)
}
