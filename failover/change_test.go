package failover_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/router"
)

// slotMove moves slots first..last (owned by a1 in twoIDC) to b1.
func slotMove(first, last int) failover.Movement {
	return failover.Movement{Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: first, Last: last}, From: "a1", To: "b1"}}}
}

func change(op failover.ChangeOp, m failover.Movement) failover.Change {
	return failover.Change{Op: op, Cutover: "c1", Move: m}
}

// Applying a change the map already reflects changes nothing: every step
// is safe to repeat after a runner dies.
func TestChangeApplyIsIdempotent(t *testing.T) {
	base := twoIDC(t, 1024, func(tb *router.Table) { must(t, tb.SetWhitelist("u42", "a1")) })
	m := slotMove(0, 3)
	m.Keys = []failover.KeyMove{{Key: "u42", From: "a1", To: "b1"}}
	freeze := change(failover.OpFreeze, m)
	freeze.States = map[string]router.CellState{"a1": router.StateFenced}
	flip := change(failover.OpFlip, m)
	unfreeze := change(failover.OpUnfreeze, m)
	for _, tc := range []struct {
		name  string
		steps []failover.Change // applied before the change under test
		c     failover.Change
	}{
		{"freeze", nil, freeze},
		{"flip", []failover.Change{freeze}, flip},
		{"unfreeze", []failover.Change{freeze}, unfreeze},
		{"unfreeze of nothing frozen", nil, unfreeze},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := base.Clone()
			for _, c := range tc.steps {
				must(t, c.Apply(tb))
			}
			before := tb.Clone()
			must(t, tc.c.Apply(tb))
			first := router.Compare(before, tb)
			once := tb.Clone()
			must(t, tc.c.Apply(tb))
			if d := router.Compare(once, tb); !d.Empty() {
				t.Fatalf("applying %s again changed the map: %q", tc.c.Op, d.Lines())
			}
			t.Logf("%s: %q", tc.c.Op, first.Lines())
		})
	}
}

// What each edit does to slots, keys and cell states.
func TestChangeApplyEffects(t *testing.T) {
	base := twoIDC(t, 1024, func(tb *router.Table) { must(t, tb.SetWhitelist("u42", "a1")) })
	// A key nobody whitelisted, served by a1 through its slot; it goes
	// where its slot goes, as the planner sends canaries.
	plain := keyOwnedBy(base, "a1")
	m := slotMove(0, 255) // all of a1
	m.Keys = []failover.KeyMove{{Key: "u42", From: "a1", To: "b2"}, {Key: plain, From: "a1", To: "b1"}}
	tb := base.Clone()

	freeze := change(failover.OpFreeze, m)
	must(t, freeze.Apply(tb))
	if by, ok := tb.SlotFrozen(7); !ok || by != "c1" || tb.SlotOwner(7) != "a1" {
		t.Fatalf("after freeze slot 7: owner %s, frozen %v by %q", tb.SlotOwner(7), ok, by)
	}
	if got := tb.FrozenKeys(); len(got) != 2 || got[0].Cutover != "c1" || got[1].Cutover != "c1" {
		t.Fatalf("after freeze frozen keys %v", got)
	}
	if tb.Owner("u42").ID != "a1" || tb.Owner(plain).ID != "a1" {
		t.Fatal("freeze moved a key")
	}

	flip := change(failover.OpFlip, m)
	flip.States = map[string]router.CellState{"a1": router.StateOffline}
	must(t, flip.Apply(tb))
	if _, ok := tb.SlotFrozen(7); ok || tb.SlotOwner(7) != "b1" {
		t.Fatalf("after flip slot 7: owner %s, frozen %v", tb.SlotOwner(7), ok)
	}
	if len(tb.FrozenKeys()) != 0 || tb.Owner("u42").ID != "b2" || tb.Owner(plain).ID != "b1" {
		t.Fatalf("after flip: frozen keys %v, u42 at %s, %s at %s", tb.FrozenKeys(), tb.Owner("u42").ID, plain, tb.Owner(plain).ID)
	}
	// The states are set after the owners move: a1 owns nothing when it
	// goes offline, so the map is valid.
	if c, _ := tb.Cell("a1"); c.State != router.StateOffline {
		t.Fatalf("a1 is %s after a draining flip", c.State)
	}
	must(t, tb.Validate())

	// An unfreeze leaves owners and the whitelist alone.
	tb = base.Clone()
	must(t, freeze.Apply(tb))
	must(t, change(failover.OpUnfreeze, m).Apply(tb))
	if d := router.Compare(base, tb); !d.Empty() {
		t.Fatalf("freeze then unfreeze left %q", d.Lines())
	}
}

// A map that no longer looks like the step expects is refused with
// ErrMapChanged instead of being overwritten.
func TestChangeApplyRefusesChangedMap(t *testing.T) {
	base := twoIDC(t, 1024, func(tb *router.Table) { must(t, tb.SetWhitelist("u42", "a1")) })
	key := func(from, to string) failover.Movement {
		return failover.Movement{Keys: []failover.KeyMove{{Key: "u42", From: from, To: to}}}
	}
	frozenByOther := func(tb *router.Table) { must(t, tb.Freeze(router.SlotRange{First: 2, Last: 2}, "other")) }
	frozenThenOther := func(tb *router.Table) {
		must(t, change(failover.OpFreeze, slotMove(0, 3)).Apply(tb))
		frozenByOther(tb)
	}
	for _, tc := range []struct {
		name string
		edit func(*router.Table) // a hand edit before the change
		c    failover.Change
		want string
	}{
		{"freeze: slot owned by a third cell", func(tb *router.Table) { must(t, tb.Assign(router.SlotRange{First: 2, Last: 2}, "b2")) },
			change(failover.OpFreeze, slotMove(0, 3)), "freeze slot 2: owned by b2, not a1"},
		{"freeze: slot already at the target", func(tb *router.Table) { must(t, tb.Assign(router.SlotRange{First: 2, Last: 2}, "b1")) },
			change(failover.OpFreeze, slotMove(0, 3)), "freeze slot 2: owned by b1, not a1"},
		{"freeze: slot frozen by another cutover", frozenByOther,
			change(failover.OpFreeze, slotMove(0, 3)), "slot 2: frozen by cutover other"},
		{"flip: slot owned by a third cell", func(tb *router.Table) {
			must(t, change(failover.OpFreeze, slotMove(0, 3)).Apply(tb))
			must(t, tb.Assign(router.SlotRange{First: 3, Last: 3}, "a2"))
		}, change(failover.OpFlip, slotMove(0, 3)), "flip slot 3: owned by a2, not a1 or b1"},
		{"flip: slot frozen by another cutover", frozenThenOther,
			change(failover.OpFlip, slotMove(0, 3)), "slot 2: frozen by cutover other"},
		{"flip: unfrozen slot still at the source", nil,
			change(failover.OpFlip, slotMove(0, 3)), "flip slot 0: not frozen"},
		{"flip: one slot unfrozen by hand", func(tb *router.Table) {
			must(t, change(failover.OpFreeze, slotMove(0, 3)).Apply(tb))
			must(t, tb.Unfreeze(router.SlotRange{First: 1, Last: 1}))
		}, change(failover.OpFlip, slotMove(0, 3)), "flip slot 1: not frozen"},
		{"unfreeze: slot frozen by another cutover", frozenThenOther,
			change(failover.OpUnfreeze, slotMove(0, 3)), "unfreeze slot 2: frozen by cutover other"},
		{"freeze: key served by a third cell", func(tb *router.Table) { must(t, tb.SetWhitelist("u42", "a2")) },
			change(failover.OpFreeze, key("a1", "b1")), `freeze key "u42": served by a2, not a1`},
		{"freeze: key frozen by another cutover", func(tb *router.Table) { must(t, tb.FreezeKey("u42", "other")) },
			change(failover.OpFreeze, key("a1", "b1")), `key "u42": frozen by cutover other`},
		{"flip: key not frozen", nil,
			change(failover.OpFlip, key("a1", "b1")), `flip key "u42": not frozen`},
		{"flip: key served by a third cell", func(tb *router.Table) {
			must(t, change(failover.OpFreeze, key("a1", "b1")).Apply(tb))
			must(t, tb.SetWhitelist("u42", "b2"))
		}, change(failover.OpFlip, key("a1", "b1")), `flip key "u42": served by b2, not a1 or b1`},
		{"unfreeze: key frozen by another cutover", func(tb *router.Table) { must(t, tb.FreezeKey("u42", "other")) },
			change(failover.OpUnfreeze, key("a1", "b1")), `key "u42": frozen by cutover other`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := base.Clone()
			if tc.edit != nil {
				tc.edit(tb)
			}
			err := tc.c.Apply(tb.Clone())
			if !errors.Is(err, failover.ErrMapChanged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want ErrMapChanged mentioning %q", err, tc.want)
			}
		})
	}
}

// A flip the map already reflects (the slots at their target, unfrozen) is
// accepted: it is the same flip done again after a runner restart.
func TestChangeApplyAcceptsDoneFlip(t *testing.T) {
	tb := twoIDC(t, 1024, nil).Clone()
	must(t, tb.Assign(router.SlotRange{First: 0, Last: 3}, "b1"))
	must(t, change(failover.OpFlip, slotMove(0, 3)).Apply(tb))
	if tb.SlotOwner(0) != "b1" {
		t.Fatalf("slot 0 owned by %s", tb.SlotOwner(0))
	}
}

func TestMovementReverseAndCells(t *testing.T) {
	m := failover.Movement{
		Slots: []router.SlotMove{{SlotRange: router.SlotRange{First: 0, Last: 1}, From: "a1", To: "b1"}, {SlotRange: router.SlotRange{First: 300, Last: 300}, From: "a2", To: "b1"}},
		Keys:  []failover.KeyMove{{Key: "u42", From: "a1", To: "b2"}},
	}
	if m.SlotCount() != 3 || m.Empty() || !(failover.Movement{}).Empty() {
		t.Fatalf("count %d, empty %v", m.SlotCount(), m.Empty())
	}
	from, to := m.Cells()
	if strings.Join(from, ",") != "a1,a2" || strings.Join(to, ",") != "b1,b2" {
		t.Fatalf("cells %v -> %v", from, to)
	}
	r := m.Reverse()
	if r.Slots[1].From != "b1" || r.Slots[1].To != "a2" || r.Keys[0].From != "b2" || r.Keys[0].To != "a1" || r.SlotCount() != 3 {
		t.Fatalf("reverse %+v", r)
	}
	back := r.Reverse()
	if back.Slots[0] != m.Slots[0] || back.Keys[0] != m.Keys[0] {
		t.Fatalf("reverse twice %+v", back)
	}
}
