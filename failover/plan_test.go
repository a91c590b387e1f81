package failover_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/router"
)

// twoIDC: cells a1, a2 in IDC-A and b1, b2 in IDC-B, each a quarter of n slots.
func twoIDC(t *testing.T, n int, edit func(*router.Table)) *router.Table {
	t.Helper()
	tb, err := router.NewTable(n)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []router.Cell{{ID: "a1", IDC: "IDC-A"}, {ID: "a2", IDC: "IDC-A"}, {ID: "b1", IDC: "IDC-B"}, {ID: "b2", IDC: "IDC-B"}} {
		must(t, tb.AddCell(c))
		must(t, tb.Assign(router.SlotRange{First: i * n / 4, Last: (i+1)*n/4 - 1}, c.ID))
	}
	if edit != nil {
		edit(tb)
	}
	must(t, tb.Validate())
	return tb.Seal()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func idcAtoB() failover.Request {
	return failover.Request{From: failover.Endpoints{IDCs: []string{"IDC-A"}}, To: failover.Endpoints{IDCs: []string{"IDC-B"}}}
}

// apply moves every stage's slots on a clone, checking each stage's moves
// start from the current owner.
func apply(t *testing.T, tb *router.Table, p *failover.Plan) *router.Table {
	t.Helper()
	c := tb.Clone()
	for _, st := range p.Stages {
		for _, m := range st.Moves {
			for s := m.First; s <= m.Last; s++ {
				if got := c.SlotOwner(s); got != m.From {
					t.Fatalf("stage %s moves slot %d from %s, but %s owns it", st.Name, s, m.From, got)
				}
			}
			must(t, c.Assign(m.SlotRange, m.To))
		}
	}
	return c
}

func TestDefaultPlanIDCToIDC(t *testing.T) {
	tb := twoIDC(t, 1024, func(tb *router.Table) { must(t, tb.SetWhitelist("u42", "a2")) })
	p, err := failover.NewPlan(tb, idcAtoB())
	must(t, err)
	if !reflect.DeepEqual(p.From, []string{"a1", "a2"}) || !reflect.DeepEqual(p.To, []string{"b1", "b2"}) || p.Moving != 512 || p.BlockSize != 1 {
		t.Fatalf("plan header: from %v to %v moving %d block %d", p.From, p.To, p.Moving, p.BlockSize)
	}
	var names []string
	var cum []int
	for _, s := range p.Stages {
		names = append(names, s.Name)
		cum = append(cum, s.Cumulative)
	}
	if want := []string{"whitelist", "1/256", "1/8", "1/4", "1/2", "1"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("stages %v, want %v", names, want)
	}
	if want := []int{0, 2, 64, 128, 256, 512}; !reflect.DeepEqual(cum, want) {
		t.Fatalf("cumulative slots %v, want %v", cum, want)
	}
	// The whitelist stage moves exactly the canary, to its slot's target.
	w := p.Stages[0]
	if len(w.Keys) != 1 || w.Keys[0].Key != "u42" || w.Keys[0].From != "a2" || len(w.Moves) != 0 {
		t.Fatalf("whitelist stage %+v", w)
	}
	// Stages are disjoint, and together move every source slot once.
	seen := map[int]string{}
	for _, st := range p.Stages {
		for _, m := range st.Moves {
			for s := m.First; s <= m.Last; s++ {
				if prev, dup := seen[s]; dup {
					t.Fatalf("slot %d moved by stage %s and again by %s", s, prev, st.Name)
				}
				seen[s] = st.Name
			}
		}
	}
	if len(seen) != 512 {
		t.Fatalf("%d slots moved, want 512", len(seen))
	}
	final := apply(t, tb, p)
	if n1, n2 := len(final.SlotsOf("b1")), len(final.SlotsOf("b2")); n1 != 512 || n2 != 512 {
		t.Fatalf("targets unbalanced: b1 %d, b2 %d", n1, n2)
	}
	if w.Keys[0].To != final.SlotOwner(router.Slot("u42", 1024)) {
		t.Fatalf("canary goes to %s, its slot to %s", w.Keys[0].To, final.SlotOwner(router.Slot("u42", 1024)))
	}
	// A stage is spread over the slot space, not one block: 1/8 of the
	// moving set (64 slots) reaches into both source cells' halves.
	st := p.Stages[2]
	if len(st.Moves) < 8 || st.Moves[0].First >= 256 || st.Moves[len(st.Moves)-1].Last < 256 {
		t.Fatalf("stage 1/8 not spread: %v", st.Moves)
	}
	// Deterministic.
	again, err := failover.NewPlan(tb, idcAtoB())
	must(t, err)
	if !reflect.DeepEqual(p, again) {
		t.Fatal("two plans of the same table and request differ")
	}
}

// At 65536 slots stages move whole 64-slot blocks, so even the half-moved
// map stays a few KiB, far inside etcd's request limit.
func TestLargeSlotCountStaysCompact(t *testing.T) {
	tb := twoIDC(t, 65536, nil)
	p, err := failover.NewPlan(tb, idcAtoB())
	must(t, err)
	if p.BlockSize != 64 {
		t.Fatalf("block size %d, want 64", p.BlockSize)
	}
	c := tb.Clone()
	for _, st := range p.Stages {
		for _, m := range st.Moves {
			must(t, c.Assign(m.SlotRange, m.To))
		}
		if st.Name == "1/2" {
			doc, err := router.Encode(c)
			must(t, err)
			if len(doc) > 128<<10 {
				t.Fatalf("half-moved 65536-slot map is %d bytes", len(doc))
			}
			t.Logf("half-moved map: %d bytes, %d owner ranges", len(doc), len(c.OwnerRanges()))
		}
	}
}

func TestCustomStagesAndCanaries(t *testing.T) {
	tb := twoIDC(t, 1024, nil)
	stages, err := failover.ParseStages("whitelist,1/256,1/16,1/2,1")
	must(t, err)
	req := idcAtoB()
	req.Stages = stages
	req.From = failover.Endpoints{Cells: []string{"a1"}}
	req.To = failover.Endpoints{Cells: []string{"b2"}}
	var canary string
	for i := 0; canary == ""; i++ {
		if k := fmt.Sprint("user-", i); router.Slot(k, 1024) < 256 {
			canary = k
		}
	}
	req.Canaries = []string{canary}
	p, err := failover.NewPlan(tb, req)
	must(t, err)
	if p.Moving != 256 || p.Stages[1].Cumulative != 1 || p.Stages[2].Cumulative != 16 || p.Stages[3].Cumulative != 128 {
		t.Fatalf("custom stages: %+v", p.Stages)
	}
	if k := p.Stages[0].Keys; len(k) != 1 || k[0] != (failover.KeyMove{Key: canary, From: "a1", To: "b2"}) {
		t.Fatalf("canary moves %+v", k)
	}
}

func TestRefusals(t *testing.T) {
	tb := twoIDC(t, 1024, func(tb *router.Table) {
		must(t, tb.AddCell(router.Cell{ID: "c1", IDC: "IDC-C"}))
		must(t, tb.AddCell(router.Cell{ID: "d1", IDC: "IDC-D", State: router.StateDraining}))
	})
	cells := func(c ...string) failover.Endpoints { return failover.Endpoints{Cells: c} }
	for _, tc := range []struct {
		name string
		req  failover.Request
		want string
	}{
		{"unknown source cell", failover.Request{From: cells("zz"), To: cells("b1")}, `source cell "zz"`},
		{"unknown target idc", failover.Request{From: cells("a1"), To: failover.Endpoints{IDCs: []string{"IDC-X"}}}, `IDC "IDC-X" has no cells`},
		{"target not active", failover.Request{From: cells("a1"), To: cells("d1")}, "target cell d1 is draining, not active"},
		{"source is target", failover.Request{From: cells("a1"), To: cells("a1")}, "both a source and a target"},
		{"nothing to move", failover.Request{From: cells("c1"), To: cells("b1")}, "own no slots"},
		{"no targets", failover.Request{From: cells("a1")}, "no target cells"},
		{"fractions not increasing", failover.Request{From: cells("a1"), To: cells("b1"), Stages: []failover.StageSpec{{Fraction: failover.Fraction{Num: 1, Den: 4}}, {Fraction: failover.Fraction{Num: 1, Den: 8}}}}, "must increase: 1/4 then 1/8"},
		{"whitelist not first", failover.Request{From: cells("a1"), To: cells("b1"), Stages: []failover.StageSpec{{Fraction: failover.Fraction{Num: 1, Den: 2}}, {Whitelist: true}}}, "whitelist stage must come first"},
		{"canary not on a source", failover.Request{From: cells("a1"), To: cells("b1"), Canaries: []string{keyOwnedBy(tb, "b2")}}, "not by a source cell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := failover.NewPlan(tb, tc.req)
			if !errors.Is(err, failover.ErrBadPlan) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPlan = %v, want ErrBadPlan mentioning %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "1/0", "2/1", "0", "-1/4", "x", "1/2,1/4", "1/8,whitelist"} {
		if _, err := failover.ParseStages(bad); !errors.Is(err, failover.ErrBadPlan) {
			t.Errorf("ParseStages(%q) = %v, want ErrBadPlan", bad, err)
		}
	}
}

func keyOwnedBy(tb *router.Table, cell string) string {
	for i := 0; ; i++ {
		if k := fmt.Sprint("k", i); tb.Owner(k).ID == cell {
			return k
		}
	}
}

// TestLastStageTakesLeftoverKeys: keys whitelisted to a source cell that
// no whitelist stage moved go with the stage that completes the move, so
// the sources serve nothing afterwards (a drained cell may go offline).
func TestLastStageTakesLeftoverKeys(t *testing.T) {
	tb := twoIDC(t, 1024, func(tb *router.Table) {
		must(t, tb.SetWhitelist("vip-1", "a1"))
		must(t, tb.SetWhitelist("vip-2", "a2"))
		must(t, tb.SetWhitelist("vip-3", "b1")) // not a source: stays
	})
	for _, tc := range []struct {
		stages   string
		canaries []string
		wantLast []string
	}{
		{"1/2,1", nil, []string{"vip-1", "vip-2"}},
		{"whitelist,1/2,1", []string{"vip-1"}, []string{"vip-2"}},
		{"whitelist,1", nil, nil},
	} {
		st, err := failover.ParseStages(tc.stages)
		must(t, err)
		req := idcAtoB()
		req.Stages, req.Canaries = st, tc.canaries
		p, err := failover.NewPlan(tb, req)
		must(t, err)
		var got []string
		for _, k := range p.Stages[len(p.Stages)-1].Keys {
			got = append(got, k.Key)
			if !strings.HasPrefix(k.To, "b") {
				t.Errorf("%s: key %s goes to %s", tc.stages, k.Key, k.To)
			}
		}
		if !reflect.DeepEqual(got, tc.wantLast) {
			t.Errorf("stages %s canaries %v: last stage keys %v, want %v", tc.stages, tc.canaries, got, tc.wantLast)
		}
	}
	// A plan that stops short of 1 leaves them alone.
	st, _ := failover.ParseStages("1/2")
	req := idcAtoB()
	req.Stages = st
	p, err := failover.NewPlan(tb, req)
	must(t, err)
	if n := len(p.Stages[0].Keys); n != 0 {
		t.Errorf("partial plan moved %d keys", n)
	}
}

// TestReversePlanRestoresTheMap: a plan and its reverse, applied in turn,
// give back the original owners of every slot, and the reverse moves only
// what the plan moved (IDC-B's own slots stay where they were).
func TestReversePlanRestoresTheMap(t *testing.T) {
	tb := twoIDC(t, 1024, nil)
	p, err := failover.NewPlan(tb, idcAtoB())
	must(t, err)
	moved := apply(t, tb, p)
	r := p.Reverse(moved.Epoch())
	if !reflect.DeepEqual(r.From, p.To) || !reflect.DeepEqual(r.To, p.From) || len(r.Stages) != len(p.Stages) {
		t.Fatalf("reverse header: from %v to %v, %d stages", r.From, r.To, len(r.Stages))
	}
	back := apply(t, moved, r)
	for s := range 1024 {
		if back.SlotOwner(s) != tb.SlotOwner(s) {
			t.Fatalf("slot %d: owner %s after the round trip, %s before", s, back.SlotOwner(s), tb.SlotOwner(s))
		}
	}
	for i, st := range r.Stages {
		if st.Name != p.Stages[i].Name || st.Slots != p.Stages[i].Slots {
			t.Errorf("stage %d: %s/%d slots, plan has %s/%d", i, st.Name, st.Slots, p.Stages[i].Name, p.Stages[i].Slots)
		}
	}
}
