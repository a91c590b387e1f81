package router

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	a := newTestTable(t)
	must(t, a.SetWhitelist("stay", "a1"))
	must(t, a.SetWhitelist("moves", "a1"))
	must(t, a.SetWhitelist("leaves", "b1"))
	must(t, a.Freeze(SlotRange{900, 909}, "old-cut"))
	must(t, a.Freeze(SlotRange{950, 951}, "recut"))
	must(t, a.FreezeKey("fk-gone", "old-cut"))
	must(t, a.FreezeKey("fk-recut", "old-cut"))
	must(t, a.AddCell(Cell{ID: "z9", IDC: "idc-z"}))
	a.Seal()

	b := a.Clone()
	b.SetEpoch(8)
	must(t, b.AddCell(Cell{ID: "d1", IDC: "idc-d", Endpoints: []string{"h:1"}}))
	must(t, b.RemoveCell("z9"))
	must(t, b.SetCellState("c1", StateActive))
	must(t, b.SetCellEndpoints("a1", []string{"10.0.0.2:9000"}))
	must(t, b.Assign(SlotRange{0, 63}, "c1"))      // a1 -> c1
	must(t, b.Assign(SlotRange{64, 65}, "d1"))     // a1 -> d1, adjacent but a different move
	must(t, b.Assign(SlotRange{100, 100}, "c1"))   // a1 -> c1, not adjacent
	must(t, b.Assign(SlotRange{510, 513}, "c1"))   // a1 -> c1 then b1 -> c1: two moves
	must(t, b.Freeze(SlotRange{0, 3}, "new-cut"))  // newly frozen
	must(t, b.Unfreeze(SlotRange{900, 904}))       // partly unfrozen
	must(t, b.Freeze(SlotRange{950, 951}, "next")) // re-frozen by another cutover
	must(t, b.SetWhitelist("moves", "b1"))
	must(t, b.RemoveWhitelist("leaves"))
	must(t, b.SetWhitelist("new", "d1"))
	b.UnfreezeKey("fk-gone")
	must(t, b.FreezeKey("fk-recut", "new-cut"))
	must(t, b.FreezeKey("fk-new", "new-cut"))
	b.Seal()

	d := Compare(a, b)
	want := Diff{
		FromEpoch: 7, ToEpoch: 8,
		Moved: []SlotMove{
			{SlotRange{0, 63}, "a1", "c1"},
			{SlotRange{64, 65}, "a1", "d1"},
			{SlotRange{100, 100}, "a1", "c1"},
			{SlotRange{510, 511}, "a1", "c1"},
			{SlotRange{512, 513}, "b1", "c1"},
		},
		Frozen:           []FrozenRange{{SlotRange{0, 3}, "new-cut"}, {SlotRange{950, 951}, "next"}},
		Unfrozen:         []SlotRange{{900, 904}},
		KeysFrozen:       []FrozenKey{{"fk-new", "new-cut"}, {"fk-recut", "new-cut"}},
		KeysUnfrozen:     []string{"fk-gone"},
		WhitelistAdded:   []WhitelistEntry{{"new", "d1"}},
		WhitelistRemoved: []WhitelistEntry{{"leaves", "b1"}},
		WhitelistChanged: []WhitelistChange{{"moves", "a1", "b1"}},
		CellsAdded:       []Cell{{ID: "d1", IDC: "idc-d", State: StateActive, Endpoints: []string{"h:1"}}},
		CellsRemoved:     []Cell{{ID: "z9", IDC: "idc-z", State: StateActive}},
		CellsChanged: []CellChange{
			{"a1", Cell{ID: "a1", IDC: "idc-a", State: StateActive, Endpoints: []string{"10.0.0.1:9000"}},
				Cell{ID: "a1", IDC: "idc-a", State: StateActive, Endpoints: []string{"10.0.0.2:9000"}}},
			{"c1", Cell{ID: "c1", IDC: "idc-c", State: StateDraining}, Cell{ID: "c1", IDC: "idc-c", State: StateActive}},
		},
	}
	if !reflect.DeepEqual(d, want) {
		got, _ := json.MarshalIndent(d, "", " ")
		exp, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("Compare:\n%s\nwant\n%s", got, exp)
	}
	if d.MovedSlots() != 64+2+1+2+2 || d.Empty() {
		t.Fatalf("MovedSlots = %d, Empty = %v", d.MovedSlots(), d.Empty())
	}

	wantLines := []string{
		"cell d1 added (idc idc-d, active, h:1)",
		"cell z9 removed",
		"cell a1 endpoints [10.0.0.1:9000] -> [10.0.0.2:9000]",
		"cell c1 state draining -> active",
		"slots 0-63 (64) a1 -> c1",
		"slots 64-65 (2) a1 -> d1",
		"slots 100 (1) a1 -> c1",
		"slots 510-511 (2) a1 -> c1",
		"slots 512-513 (2) b1 -> c1",
		"slots 0-3 frozen by new-cut",
		"slots 950-951 frozen by next",
		"slots 900-904 unfrozen",
		`key "fk-new" frozen by new-cut`,
		`key "fk-recut" frozen by new-cut`,
		`key "fk-gone" unfrozen`,
		`whitelist "new" -> d1`,
		`whitelist "moves" a1 -> b1`,
		`whitelist "leaves" removed (was b1)`,
	}
	if got := d.Lines(); !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("Lines:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}

	// The reverse diff undoes it.
	r := Compare(b, a)
	if r.MovedSlots() != d.MovedSlots() || len(r.CellsAdded) != 1 || r.CellsAdded[0].ID != "z9" || len(r.WhitelistAdded) != 1 || r.WhitelistAdded[0].Key != "leaves" {
		t.Fatalf("reverse diff: %q", r.Lines())
	}
}

func TestCompareEqualAndEpochOnly(t *testing.T) {
	a := newTestTable(t)
	if d := Compare(a, a); !d.Empty() || d.Lines() != nil {
		t.Fatalf("Compare(a, a) = %q", d.Lines())
	}
	b := a.Clone()
	b.SetEpoch(100)
	d := Compare(a, b)
	if !d.Empty() || d.FromEpoch != 7 || d.ToEpoch != 100 {
		t.Fatalf("epoch-only diff: %+v", d)
	}
}

func TestCompareNil(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.SetWhitelist("u1", "b1"))
	must(t, tb.Freeze(SlotRange{1, 2}, "cut"))
	d := Compare(nil, tb)
	if d.FromEpoch != 0 || d.ToEpoch != 7 || len(d.CellsAdded) != 3 || d.MovedSlots() != 1024 ||
		len(d.WhitelistAdded) != 1 || len(d.Frozen) != 1 || d.SlotCount != [2]int{} {
		t.Fatalf("Compare(nil, t) = %+v", d)
	}
	if d.Moved[0] != (SlotMove{SlotRange{0, 511}, "", "a1"}) {
		t.Fatalf("first move %+v", d.Moved[0])
	}
	if lines := d.Lines(); !contains(lines, "slots 0-511 (512) (none) -> a1") || !contains(lines, "cell c1 added (idc idc-c, draining)") {
		t.Fatalf("Lines: %q", lines)
	}
	back := Compare(tb, nil)
	if back.FromEpoch != 7 || len(back.CellsRemoved) != 3 || back.Moved[1] != (SlotMove{SlotRange{512, 1023}, "b1", ""}) || len(back.Unfrozen) != 1 {
		t.Fatalf("Compare(t, nil) = %+v", back)
	}
	if !contains(back.Lines(), "slots 512-1023 (512) b1 -> (none)") {
		t.Fatalf("Lines: %q", back.Lines())
	}
	if d := Compare(nil, nil); !d.Empty() {
		t.Fatalf("Compare(nil, nil) = %q", d.Lines())
	}
}

func TestCompareSlotCount(t *testing.T) {
	a, _ := NewTable(256)
	must(t, a.AddCell(Cell{ID: "a1", IDC: "x"}))
	must(t, a.Assign(SlotRange{0, 255}, "a1"))
	b, _ := NewTable(512)
	must(t, b.AddCell(Cell{ID: "a1", IDC: "x"}))
	must(t, b.Assign(SlotRange{0, 511}, "a1"))
	d := Compare(a, b)
	if d.SlotCount != [2]int{256, 512} || len(d.Moved) != 1 || d.Moved[0] != (SlotMove{SlotRange{256, 511}, "", "a1"}) {
		t.Fatalf("%+v", d)
	}
	if d.Lines()[0] != "slot count 256 -> 512" {
		t.Fatalf("%q", d.Lines())
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}
