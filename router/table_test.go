package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	tb := newTestTable(t)
	lowA := func(s int) bool { return s < 512 }
	plain := keyInSlot(t, "plain-", 1024, lowA)
	pinned := keyInSlot(t, "pinned-", 1024, lowA)
	frozenSlotKey := keyInSlot(t, "fs-", 1024, func(s int) bool { return s >= 512 && s < 600 })
	neighbour := keyInSlot(t, "nb-", 1024, func(s int) bool { return s == Slot(frozenSlotKey, 1024) })
	pinnedInFrozen := keyInSlot(t, "pf-", 1024, func(s int) bool { return s == Slot(frozenSlotKey, 1024) })
	frozenKey := keyInSlot(t, "fk-", 1024, lowA)
	frozenKeyNeighbour := keyInSlot(t, "fkn-", 1024, func(s int) bool { return s == Slot(frozenKey, 1024) })
	pinnedFrozen := keyInSlot(t, "pinfz-", 1024, lowA)

	must(t, tb.SetWhitelist(pinned, "b1"))
	must(t, tb.Freeze(SlotRange{512, 599}, "cut-1"))
	must(t, tb.SetWhitelist(pinnedInFrozen, "c1"))
	must(t, tb.FreezeKey(frozenKey, "cut-2"))
	must(t, tb.SetWhitelist(pinnedFrozen, "c1"))
	must(t, tb.FreezeKey(pinnedFrozen, "cut-3"))
	tb.Seal()

	ordPlain := mustID(t, "ord", t0.UnixMilli(), Hash(plain), 1)
	ordPinned := mustID(t, "ord", t0.UnixMilli(), Hash(pinned), 2)
	ordFrozenKey := mustID(t, "pay", t0.UnixMilli(), Hash(frozenKey), 3)
	ordFrozenSlot := mustID(t, "ref", t0.UnixMilli(), Hash(frozenSlotKey), 4)
	badID := strings.ToLower(ordPinned[:4]) + strings.ToLower(ordPinned[4:])
	spoiled := spoil(ordPinned)

	type want struct {
		cell        string
		frozen      bool
		cutover     string
		whitelisted bool
		slot        int // -1: Slot(key) itself
	}
	cases := []struct {
		name string
		key  string
		want want
	}{
		{"plain key, slot owner", plain, want{"a1", false, "", false, -1}},
		{"whitelist beats slot", pinned, want{"b1", false, "", true, -1}},
		{"frozen slot keeps owner", frozenSlotKey, want{"b1", true, "cut-1", false, -1}},
		{"other key in frozen slot", neighbour, want{"b1", true, "cut-1", false, -1}},
		{"whitelisted key ignores its slot's freeze", pinnedInFrozen, want{"c1", false, "", true, -1}},
		{"frozen key", frozenKey, want{"a1", true, "cut-2", false, -1}},
		{"same slot as frozen key, not frozen", frozenKeyNeighbour, want{"a1", false, "", false, -1}},
		{"whitelisted and frozen key", pinnedFrozen, want{"c1", true, "cut-3", true, -1}},
		{"ID routes to its key's slot", ordPlain, want{"a1", false, "", false, Slot(plain, 1024)}},
		{"ID of whitelisted key goes to its cell", ordPinned, want{"b1", false, "", true, Slot(pinned, 1024)}},
		{"ID of frozen key is frozen", ordFrozenKey, want{"a1", true, "cut-2", false, Slot(frozenKey, 1024)}},
		{"ID in frozen slot is frozen", ordFrozenSlot, want{"b1", true, "cut-1", false, Slot(frozenSlotKey, 1024)}},
		{"lower-case ID routes by own hash", badID, want{tb.SlotOwner(Slot(badID, 1024)), false, "", false, -1}},
		{"bad check byte routes by own hash", spoiled, want{tb.SlotOwner(Slot(spoiled, 1024)), false, "", false, -1}},
		{"key spelled like whitelisted one but longer", pinned + " ", want{tb.SlotOwner(Slot(pinned+" ", 1024)), false, "", false, -1}},
		{"empty key", "", want{tb.SlotOwner(Slot("", 1024)), false, "", false, -1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tb.Lookup(c.key)
			slot := c.want.slot
			if slot < 0 {
				slot = Slot(c.key, 1024)
			}
			if r.Cell == nil || r.Cell.ID != c.want.cell || r.Frozen != c.want.frozen || r.Cutover != c.want.cutover ||
				r.Whitelisted != c.want.whitelisted || r.Slot != slot || r.Epoch != 7 {
				t.Fatalf("Lookup(%q) = %+v (cell %v), want %+v slot %d epoch 7", c.key, r, r.Cell, c.want, slot)
			}
			if o := tb.Owner(c.key); o != r.Cell {
				t.Fatalf("Owner(%q) = %v, Lookup says %v", c.key, o, r.Cell)
			}
			if tb.Slot(c.key) != r.Slot {
				t.Fatalf("Table.Slot(%q) = %d, Lookup says %d", c.key, tb.Slot(c.key), r.Slot)
			}
		})
	}
	if _, ok := idHash(badID); ok {
		t.Fatal("test setup: lower-case ID is accepted")
	}
}

func TestLookupUnownedSlot(t *testing.T) {
	tb, _ := NewTable(256)
	r := tb.Lookup("u1")
	if r.Cell != nil || tb.Owner("u1") != nil || r.Slot != Slot("u1", 256) {
		t.Fatalf("Lookup on an empty table = %+v", r)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.SetWhitelist("u1", "b1"))
	must(t, tb.FreezeKey("u2", "cut"))
	must(t, tb.Freeze(SlotRange{0, 99}, "cut"))
	tb.Seal()
	id := mustID(t, "ord", t0.UnixMilli(), Hash("u1"), 1)
	for _, k := range []string{"u1", "u2", "u3", id, spoil(id), strings.Repeat("z", 300)} {
		if n := testing.AllocsPerRun(100, func() { _ = tb.Lookup(k) }); n != 0 {
			t.Errorf("Lookup(%q) allocates %v times", k, n)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := newTestTable(t).Validate(); err != nil {
		t.Fatalf("valid table: %v", err)
	}
	cases := []struct {
		name  string
		setup func(tb *Table)
		want  []string
	}{
		{"unowned slots", func(tb *Table) {
			tb.slots[3].owner, tb.slots[4].owner, tb.slots[1023].owner = 0, 0, 0
		}, []string{"slots 3-4,1023 have no owner"}},
		{"offline owner", func(tb *Table) { must(t, tb.SetCellState("b1", StateOffline)) },
			[]string{`slots 512-1023 are owned by offline cell "b1"`}},
		{"whitelist to offline cell", func(tb *Table) {
			must(t, tb.SetWhitelist("u1", "c1"))
			must(t, tb.SetCellState("c1", StateOffline))
		}, []string{`whitelisted key "u1" is pinned to offline cell "c1"`}},
		{"fenced and draining owners are fine", func(tb *Table) {
			must(t, tb.SetCellState("a1", StateFenced))
			must(t, tb.SetCellState("b1", StateDraining))
			must(t, tb.SetCellState("c1", StateOffline)) // owns nothing
		}, nil},
		{"malformed cell", func(tb *Table) { tb.cells[2].IDC = "bad idc" }, []string{`idc "bad idc"`}},
		{"duplicate cell", func(tb *Table) { tb.cells = append(tb.cells, tb.cells[2]) }, []string{`cell "c1" listed twice`}},
		{"bad slot count", func(tb *Table) { tb.slotCount = 1000 }, []string{"slot count 1000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := newTestTable(t)
			c.setup(tb)
			err := tb.Validate()
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, ErrInvalidTable, c.want...)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Epoch != 7 || len(ve.Problems) != len(c.want) {
				t.Fatalf("%v: want a *ValidationError at epoch 7 with %d problem(s)", err, len(c.want))
			}
		})
	}

	t.Run("no cells, all problems at once", func(t *testing.T) {
		tb, _ := NewTable(256)
		err := tb.Validate()
		wantErr(t, err, ErrInvalidTable, "no cells", "slots 0-255 have no owner", "2 problem(s)")
	})
	t.Run("every problem listed", func(t *testing.T) {
		tb := newTestTable(t)
		tb.slots[0].owner = 0
		must(t, tb.AddCell(Cell{ID: "d1", IDC: "idc-d"}))
		must(t, tb.Assign(SlotRange{100, 100}, "d1"))
		must(t, tb.SetWhitelist("u1", "d1"))
		must(t, tb.SetCellState("d1", StateOffline))
		for i := 0; i < 5; i++ {
			must(t, tb.SetWhitelist(fmt.Sprintf("w%d", i), "d1"))
		}
		err := tb.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%v", err)
		}
		// 1 unowned + 1 offline owner + 6 whitelisted keys
		if len(ve.Problems) != 8 {
			t.Fatalf("problems = %q", ve.Problems)
		}
		wantErr(t, err, ErrInvalidTable, "8 problem(s)", "slots 0 have no owner", `slots 100 are owned by offline cell "d1"`, "and 3 more")
	})
}

func TestMutatorErrors(t *testing.T) {
	id := mustID(t, "ord", t0.UnixMilli(), Hash("u1"), 1)
	cases := []struct {
		name   string
		f      func(tb *Table) error
		target error
		sub    string
	}{
		{"add duplicate cell", func(tb *Table) error { return tb.AddCell(Cell{ID: "a1", IDC: "x"}) }, ErrDuplicateCell, `"a1"`},
		{"add bad cell id", func(tb *Table) error { return tb.AddCell(Cell{ID: "-a", IDC: "x"}) }, ErrBadCell, `cell id "-a"`},
		{"add empty cell id", func(tb *Table) error { return tb.AddCell(Cell{IDC: "x"}) }, ErrBadCell, `cell id ""`},
		{"add long cell id", func(tb *Table) error { return tb.AddCell(Cell{ID: strings.Repeat("a", 64), IDC: "x"}) }, ErrBadCell, "cell id"},
		{"add bad idc", func(tb *Table) error { return tb.AddCell(Cell{ID: "d1", IDC: "a b"}) }, ErrBadCell, `idc "a b"`},
		{"add bad state", func(tb *Table) error { return tb.AddCell(Cell{ID: "d1", IDC: "x", State: "up"}) }, ErrBadCell, `state "up"`},
		{"add bad endpoint", func(tb *Table) error {
			return tb.AddCell(Cell{ID: "d1", IDC: "x", Endpoints: []string{"a b"}})
		}, ErrBadCell, `endpoint "a b"`},
		{"add empty endpoint", func(tb *Table) error { return tb.AddCell(Cell{ID: "d1", IDC: "x", Endpoints: []string{""}}) }, ErrBadCell, "endpoint"},
		{"add non-UTF-8 endpoint", func(tb *Table) error {
			return tb.AddCell(Cell{ID: "d1", IDC: "x", Endpoints: []string{"h\xff:1"}})
		}, ErrBadCell, "endpoint"},
		{"remove unknown cell", func(tb *Table) error { return tb.RemoveCell("zz") }, ErrUnknownCell, `"zz"`},
		{"remove cell owning slots", func(tb *Table) error { return tb.RemoveCell("a1") }, ErrCellInUse, "owns slots"},
		{"remove cell with whitelisted key", func(tb *Table) error {
			must(t, tb.SetWhitelist("u1", "c1"))
			return tb.RemoveCell("c1")
		}, ErrCellInUse, `"u1"`},
		{"state of unknown cell", func(tb *Table) error { return tb.SetCellState("zz", StateActive) }, ErrUnknownCell, "zz"},
		{"bad state", func(tb *Table) error { return tb.SetCellState("a1", "gone") }, ErrBadCell, `"gone"`},
		{"endpoints of unknown cell", func(tb *Table) error { return tb.SetCellEndpoints("zz", nil) }, ErrUnknownCell, "zz"},
		{"bad endpoints", func(tb *Table) error { return tb.SetCellEndpoints("a1", []string{"x\ty"}) }, ErrBadCell, "endpoint"},
		{"assign to unknown cell", func(tb *Table) error { return tb.Assign(SlotRange{0, 1}, "zz") }, ErrUnknownCell, "zz"},
		{"assign reversed range", func(tb *Table) error { return tb.Assign(SlotRange{5, 4}, "a1") }, ErrBadSlotRange, "5-4"},
		{"assign past the end", func(tb *Table) error { return tb.Assign(SlotRange{0, 1024}, "a1") }, ErrBadSlotRange, "outside 0-1023"},
		{"assign negative", func(tb *Table) error { return tb.Assign(SlotRange{-1, 0}, "a1") }, ErrBadSlotRange, "outside"},
		{"freeze bad range", func(tb *Table) error { return tb.Freeze(SlotRange{1024, 1024}, "cut") }, ErrBadSlotRange, "outside"},
		{"freeze empty cutover", func(tb *Table) error { return tb.Freeze(SlotRange{0, 0}, "") }, ErrBadKey, "cutover name"},
		{"freeze cutover with slash", func(tb *Table) error { return tb.Freeze(SlotRange{0, 0}, "a/b") }, ErrBadKey, "cutover name"},
		{"freeze cutover with space", func(tb *Table) error { return tb.Freeze(SlotRange{0, 0}, "a b") }, ErrBadKey, "cutover name"},
		{"freeze long cutover", func(tb *Table) error { return tb.Freeze(SlotRange{0, 0}, strings.Repeat("c", 129)) }, ErrBadKey, "cutover name"},
		{"freeze non-UTF-8 cutover", func(tb *Table) error { return tb.Freeze(SlotRange{0, 0}, "c\xff") }, ErrBadKey, "cutover name"},
		{"unfreeze bad range", func(tb *Table) error { return tb.Unfreeze(SlotRange{3, 2}) }, ErrBadSlotRange, "outside"},
		{"freeze empty key", func(tb *Table) error { return tb.FreezeKey("", "cut") }, ErrBadKey, "empty key"},
		{"freeze key bad cutover", func(tb *Table) error { return tb.FreezeKey("u1", "") }, ErrBadKey, "cutover"},
		{"freeze an ID", func(tb *Table) error { return tb.FreezeKey(id, "cut") }, ErrBadKey, "slot-bearing ID"},
		{"whitelist empty key", func(tb *Table) error { return tb.SetWhitelist("", "a1") }, ErrBadKey, "empty key"},
		{"whitelist long key", func(tb *Table) error { return tb.SetWhitelist(strings.Repeat("k", 513), "a1") }, ErrBadKey, "513 bytes"},
		{"whitelist control char", func(tb *Table) error { return tb.SetWhitelist("a\x01", "a1") }, ErrBadKey, "control"},
		{"whitelist non-UTF-8 key", func(tb *Table) error { return tb.SetWhitelist("k\xff", "a1") }, ErrBadKey, "UTF-8"},
		{"whitelist an ID", func(tb *Table) error { return tb.SetWhitelist(id, "a1") }, ErrBadKey, "slot-bearing ID"},
		{"whitelist to unknown cell", func(tb *Table) error { return tb.SetWhitelist("u1", "zz") }, ErrUnknownCell, "zz"},
		{"remove missing whitelist entry", func(tb *Table) error { return tb.RemoveWhitelist("u1") }, ErrNotWhitelisted, `"u1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := newTestTable(t)
			before := mustEncode(t, tb)
			err := c.f(tb)
			wantErr(t, err, c.target, c.sub)
			if c.name != "remove cell with whitelisted key" && string(mustEncode(t, tb)) != string(before) {
				t.Fatalf("a failed mutation changed the table")
			}
		})
	}
	for _, n := range []int{0, 128, 1000, 1 << 17} {
		_, err := NewTable(n)
		wantErr(t, err, ErrBadSlotCount, fmt.Sprint(n))
	}
}

func TestMutators(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.AddCell(Cell{ID: "d1", IDC: "idc-d"}))
	if c, _ := tb.Cell("d1"); c.State != StateActive {
		t.Fatalf("AddCell without a state: %q, want active", c.State)
	}
	must(t, tb.SetCellEndpoints("d1", []string{"h:1", "h:2"}))
	must(t, tb.SetCellState("d1", StateFenced))
	if c, ok := tb.Cell("d1"); !ok || c.State != StateFenced || len(c.Endpoints) != 2 {
		t.Fatalf("Cell(d1) = %+v, %v", c, ok)
	}
	if _, ok := tb.Cell("zz"); ok {
		t.Fatal("Cell(zz) found")
	}

	must(t, tb.SetWhitelist("u1", "a1"))
	must(t, tb.SetWhitelist("u1", "b1")) // re-pinning moves the key
	if wl := tb.Whitelist(); len(wl) != 1 || wl[0] != (WhitelistEntry{"u1", "b1"}) {
		t.Fatalf("whitelist = %v", wl)
	}
	must(t, tb.RemoveWhitelist("u1"))
	if len(tb.Whitelist()) != 0 {
		t.Fatal("whitelist not empty")
	}

	must(t, tb.Freeze(SlotRange{10, 19}, "cut-a"))
	must(t, tb.Freeze(SlotRange{15, 24}, "cut-b"))
	must(t, tb.Unfreeze(SlotRange{12, 13}))
	if got := fmt.Sprintf("%+v", frozenStrings(tb.FrozenRanges())); got != "[10-11:cut-a 14:cut-a 15-24:cut-b]" {
		t.Fatalf("frozen ranges = %s", got)
	}
	if c, ok := tb.SlotFrozen(15); !ok || c != "cut-b" {
		t.Fatalf("SlotFrozen(15) = %q, %v", c, ok)
	}
	for _, s := range []int{-1, 1024, 12} {
		if _, ok := tb.SlotFrozen(s); ok {
			t.Fatalf("SlotFrozen(%d) = true", s)
		}
	}
	must(t, tb.FreezeKey("u9", "cut-a"))
	must(t, tb.FreezeKey("u9", "cut-b")) // refreezing changes the cutover
	tb.UnfreezeKey("not-frozen")         // no-op
	if fk := tb.FrozenKeys(); len(fk) != 1 || fk[0] != (FrozenKey{"u9", "cut-b"}) {
		t.Fatalf("frozen keys = %v", fk)
	}
	tb.UnfreezeKey("u9")
	if len(tb.FrozenKeys()) != 0 {
		t.Fatal("frozen keys not empty")
	}

	must(t, tb.Assign(SlotRange{0, 9}, "d1"))
	if got := fmt.Sprint(ownerStrings(tb.OwnerRanges())); got != "[0-9:d1 10-511:a1 512-1023:b1]" {
		t.Fatalf("owner ranges = %s", got)
	}
	if got := tb.SlotsOf("d1"); len(got) != 10 || got[0] != 0 || got[9] != 9 {
		t.Fatalf("SlotsOf(d1) = %v", got)
	}
	if tb.SlotsOf("zz") != nil || tb.SlotOwner(-1) != "" || tb.SlotOwner(1024) != "" {
		t.Fatal("out-of-range accessors")
	}
	tb.SetEpoch(99)
	if tb.Epoch() != 99 || tb.SlotCount() != 1024 || tb.Sealed() {
		t.Fatal("Epoch/SlotCount/Sealed")
	}
}

func TestSealedTablePanics(t *testing.T) {
	tb := newTestTable(t).Seal()
	if !tb.Sealed() {
		t.Fatal("not sealed")
	}
	for name, f := range map[string]func(){
		"SetEpoch":         func() { tb.SetEpoch(1) },
		"AddCell":          func() { _ = tb.AddCell(Cell{ID: "d1", IDC: "x"}) },
		"RemoveCell":       func() { _ = tb.RemoveCell("c1") },
		"SetCellState":     func() { _ = tb.SetCellState("a1", StateFenced) },
		"SetCellEndpoints": func() { _ = tb.SetCellEndpoints("a1", nil) },
		"Assign":           func() { _ = tb.Assign(SlotRange{0, 0}, "b1") },
		"Freeze":           func() { _ = tb.Freeze(SlotRange{0, 0}, "c") },
		"Unfreeze":         func() { _ = tb.Unfreeze(SlotRange{0, 0}) },
		"FreezeKey":        func() { _ = tb.FreezeKey("u1", "c") },
		"UnfreezeKey":      func() { tb.UnfreezeKey("u1") },
		"SetWhitelist":     func() { _ = tb.SetWhitelist("u1", "a1") },
		"RemoveWhitelist":  func() { _ = tb.RemoveWhitelist("u1") },
		// Invalid arguments must not slip past the seal check either.
		"Assign bad range": func() { _ = tb.Assign(SlotRange{-5, -9}, "zz") },
	} {
		mustPanic(t, name, f)
	}
	// A clone of a sealed table is mutable.
	c := tb.Clone()
	must(t, c.Assign(SlotRange{0, 0}, "b1"))
	if tb.SlotOwner(0) != "a1" {
		t.Fatal("mutating the clone changed the sealed original")
	}
}

func TestCloneIsDeep(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.SetWhitelist("u1", "a1"))
	must(t, tb.FreezeKey("u2", "cut-1"))
	must(t, tb.Freeze(SlotRange{0, 3}, "cut-1"))
	tb.Seal()
	before := string(mustEncode(t, tb))

	c := tb.Clone()
	if c.Sealed() {
		t.Fatal("clone is sealed")
	}
	if string(mustEncode(t, c)) != before {
		t.Fatal("clone encodes differently")
	}
	c.SetEpoch(8)
	must(t, c.AddCell(Cell{ID: "d1", IDC: "idc-d"}))
	must(t, c.Assign(SlotRange{0, 511}, "d1"))
	must(t, c.RemoveCell("c1"))
	must(t, c.SetCellState("a1", StateFenced))
	must(t, c.SetWhitelist("u1", "b1"))
	must(t, c.SetWhitelist("u3", "b1"))
	c.UnfreezeKey("u2")
	must(t, c.Freeze(SlotRange{0, 3}, "cut-2"))
	must(t, c.Unfreeze(SlotRange{2, 2}))
	c.cells[slicesIndex(c, "a1")].Endpoints[0] = "changed:1" // in place, through the backing array

	if got := string(mustEncode(t, tb)); got != before {
		t.Fatalf("mutating the clone changed the original:\nbefore %s\nafter  %s", before, got)
	}
	if a1, _ := tb.Cell("a1"); a1.Endpoints[0] != "10.0.0.1:9000" || a1.State != StateActive {
		t.Fatalf("original cell a1 changed: %+v", a1)
	}

	// Accessors hand out copies too.
	cells := tb.Cells()
	cells[0].Endpoints[0] = "x:1"
	cell, _ := tb.Cell("a1")
	cell.Endpoints[0] = "y:1"
	if string(mustEncode(t, tb)) != before {
		t.Fatal("editing what Cells/Cell returned changed the table")
	}
}

func slicesIndex(tb *Table, id string) int { return tb.cellIndex(id) }

func ownerStrings(rs []OwnerRange) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.SlotRange.String()+":"+r.Cell)
	}
	return out
}

func frozenStrings(rs []FrozenRange) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.SlotRange.String()+":"+r.Cutover)
	}
	return out
}

func TestRemoveCellReindexes(t *testing.T) {
	for _, victim := range []string{"x0", "x2", "x4"} { // first, middle, last
		t.Run(victim, func(t *testing.T) {
			tb, _ := NewTable(256)
			for i := 0; i < 5; i++ {
				must(t, tb.AddCell(Cell{ID: fmt.Sprintf("x%d", i), IDC: "idc"}))
			}
			// Every cell but the victim owns 64 slots and two whitelisted keys.
			var owners []string
			for i := 0; i < 5; i++ {
				if id := fmt.Sprintf("x%d", i); id != victim {
					owners = append(owners, id)
				}
			}
			for i, id := range owners {
				must(t, tb.Assign(SlotRange{i * 64, i*64 + 63}, id))
				must(t, tb.SetWhitelist("w-"+id, id))
				must(t, tb.SetWhitelist("v-"+id, id))
			}
			must(t, tb.Freeze(SlotRange{60, 70}, "cut"))
			must(t, tb.FreezeKey("w-x3", "cut2"))
			wantRanges := fmt.Sprint(ownerStrings(tb.OwnerRanges()))
			wantWL := fmt.Sprint(tb.Whitelist())
			wantFrozen := fmt.Sprint(frozenStrings(tb.FrozenRanges()), tb.FrozenKeys())

			must(t, tb.RemoveCell(victim))
			if _, ok := tb.Cell(victim); ok || len(tb.Cells()) != 4 {
				t.Fatal("cell not removed")
			}
			if got := fmt.Sprint(ownerStrings(tb.OwnerRanges())); got != wantRanges {
				t.Fatalf("owners %s, want %s", got, wantRanges)
			}
			if got := fmt.Sprint(tb.Whitelist()); got != wantWL {
				t.Fatalf("whitelist %s, want %s", got, wantWL)
			}
			if got := fmt.Sprint(frozenStrings(tb.FrozenRanges()), tb.FrozenKeys()); got != wantFrozen {
				t.Fatalf("frozen %s, want %s", got, wantFrozen)
			}
			for i, id := range owners {
				if o := tb.Owner("w-" + id); o == nil || o.ID != id {
					t.Fatalf("whitelisted w-%s routes to %v", id, o)
				}
				if s := i * 64; tb.SlotOwner(s) != id || tb.SlotOwner(s+63) != id {
					t.Fatalf("slot %d owner %q, want %s", s, tb.SlotOwner(s), id)
				}
			}
			if err := tb.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCutoverNamesCompact(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.Freeze(SlotRange{5, 5}, "keep-slot"))
	must(t, tb.FreezeKey("u1", "keep-key"))
	// As if 65533 more cutovers had come and gone.
	for len(tb.cutovers) < 1<<16-1 {
		tb.cutovers = append(tb.cutovers, fmt.Sprintf("gone-%d", len(tb.cutovers)))
	}
	must(t, tb.Freeze(SlotRange{6, 7}, "new"))
	if len(tb.cutovers) != 3 {
		t.Fatalf("after compaction %d cutover names", len(tb.cutovers))
	}
	if c, _ := tb.SlotFrozen(5); c != "keep-slot" {
		t.Fatalf("slot 5 frozen by %q", c)
	}
	if c, _ := tb.SlotFrozen(7); c != "new" {
		t.Fatalf("slot 7 frozen by %q", c)
	}
	if r := tb.Lookup("u1"); !r.Frozen || r.Cutover != "keep-key" {
		t.Fatalf("u1: %+v", r)
	}
}

func TestCellState(t *testing.T) {
	for _, s := range []string{"active", "draining", "fenced", "offline"} {
		if st, err := ParseCellState(s); err != nil || string(st) != s {
			t.Fatalf("ParseCellState(%q) = %q, %v", s, st, err)
		}
	}
	_, err := ParseCellState("Active")
	wantErr(t, err, ErrBadCell, `"Active"`)
}

// Sealed tables answer through a filter of pinned-key hashes; mutable ones go
// straight to the maps. Both must give the same answer, for every kind of key.
func TestLookupSealedMatchesMutable(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for i := 0; i < 100; i++ {
		mutable := randTable(t, r)
		if i%2 == 0 { // also through Clone of a sealed table, then more pins
			mutable = mutable.Seal().Clone()
			must(t, mutable.SetWhitelist(fmt.Sprintf("late-%d", i), mutable.SlotOwner(0)))
			must(t, mutable.FreezeKey(fmt.Sprintf("late-f-%d", i), "late"))
			if wl := mutable.Whitelist(); len(wl) > 1 {
				must(t, mutable.RemoveWhitelist(wl[0].Key))
			}
		}
		sealed := mutable.Clone().Seal()
		var keys []string
		for _, e := range mutable.Whitelist() {
			keys = append(keys, e.Key)
		}
		for _, e := range mutable.FrozenKeys() {
			keys = append(keys, e.Key)
		}
		for j := 0; j < 50; j++ {
			keys = append(keys, randKey(r))
		}
		for _, k := range keys[:len(keys):len(keys)] {
			keys = append(keys, mustID(t, "ord", r.Int64N(1<<40), Hash(k), 1))
		}
		for _, k := range keys {
			a, b := mutable.Lookup(k), sealed.Lookup(k)
			if a.Slot != b.Slot || a.Cell.ID != b.Cell.ID || a.Frozen != b.Frozen || a.Cutover != b.Cutover || a.Whitelisted != b.Whitelisted {
				t.Fatalf("table %d, key %q: mutable %+v, sealed %+v", i, k, a, b)
			}
			if sealed.Owner(k) != b.Cell || mutable.Owner(k) != a.Cell {
				t.Fatalf("Owner(%q) disagrees with Lookup", k)
			}
		}
	}
}

func TestSealTwiceKeepsFilter(t *testing.T) {
	tb := newTestTable(t)
	must(t, tb.SetWhitelist("vip", "c1"))
	tb.Seal()
	f := tb.pinFilter
	tb.Seal() // no-op, no write (tables are shared once sealed)
	if &tb.pinFilter[0] != &f[0] || tb.Owner("vip").ID != "c1" {
		t.Fatal("second Seal rebuilt the filter or lost the whitelist")
	}
	empty, _ := NewTable(256)
	must(t, empty.AddCell(Cell{ID: "a", IDC: "x"}))
	must(t, empty.Assign(SlotRange{0, 255}, "a"))
	if empty.Seal().pinFilter != nil || empty.Owner("vip").ID != "a" {
		t.Fatal("table without pinned keys")
	}
}
