package failover

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cellkit/cellkit/router"
)

// ErrMapChanged is returned when the map no longer looks like a cutover step
// expects: someone moved, froze or unfroze the cutover's slots by hand. The
// runner stops instead of overwriting that change.
var ErrMapChanged = errors.New("the map changed under the cutover")

// Movement is what one stage (or one rollback) moves: slot ranges and
// whitelisted keys, each from one cell to another.
type Movement struct {
	Slots []router.SlotMove `json:"slots,omitempty"`
	Keys  []KeyMove         `json:"keys,omitempty"`
}

// Empty reports whether the movement moves nothing.
func (m Movement) Empty() bool { return len(m.Slots) == 0 && len(m.Keys) == 0 }

// SlotCount is the number of slots moved.
func (m Movement) SlotCount() int {
	n := 0
	for _, s := range m.Slots {
		n += s.Last - s.First + 1
	}
	return n
}

// Reverse returns the movement that undoes m.
func (m Movement) Reverse() Movement {
	var r Movement
	for _, s := range m.Slots {
		r.Slots = append(r.Slots, router.SlotMove{SlotRange: s.SlotRange, From: s.To, To: s.From})
	}
	for _, k := range m.Keys {
		r.Keys = append(r.Keys, KeyMove{Key: k.Key, From: k.To, To: k.From})
	}
	return r
}

// Cells returns the sorted source and target cells of m.
func (m Movement) Cells() (from, to []string) {
	for _, s := range m.Slots {
		from, to = append(from, s.From), append(to, s.To)
	}
	for _, k := range m.Keys {
		from, to = append(from, k.From), append(to, k.To)
	}
	slices.Sort(from)
	slices.Sort(to)
	return slices.Compact(from), slices.Compact(to)
}

// Movement of a planned stage.
func (s Stage) Movement() Movement { return Movement{Slots: s.Moves, Keys: s.Keys} }

// ChangeOp is one kind of map edit a cutover makes.
type ChangeOp string

// Map edits of a cutover step.
const (
	OpFreeze   ChangeOp = "freeze"   // freeze the movement's slots and keys, owner unchanged
	OpFlip     ChangeOp = "flip"     // owner := target, unfrozen
	OpUnfreeze ChangeOp = "unfreeze" // undo a freeze, owner unchanged
)

// Change is one map edit of a cutover, as a pure function of the table.
// Applying a change the map already reflects changes nothing, which is what
// makes every step safe to repeat after the runner dies.
type Change struct {
	Op      ChangeOp `json:"op"`
	Cutover string   `json:"cutover"`
	Move    Movement `json:"move"`
	// States sets cell states along with the edit: an emergency failover
	// marks the lost cells fenced with its freeze; a drain marks the
	// drained cell offline with its last flip.
	States map[string]router.CellState `json:"states,omitempty"`
}

// Apply edits t (a mutable table). It refuses, with ErrMapChanged, a map in
// which a slot or key of the movement is owned by neither end of its move,
// or frozen by another cutover.
func (c Change) Apply(t *router.Table) error {
	for _, m := range c.Move.Slots {
		if err := c.applySlots(t, m); err != nil {
			return err
		}
	}
	for _, k := range c.Move.Keys {
		if err := c.applyKey(t, k); err != nil {
			return err
		}
	}
	// States are set after the owners move, so that a cell going offline
	// no longer owns anything.
	ids := make([]string, 0, len(c.States))
	for id := range c.States {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := t.SetCellState(id, c.States[id]); err != nil {
			return fmt.Errorf("failover: %s: %w", c.Op, err)
		}
	}
	return nil
}

func (c Change) applySlots(t *router.Table, m router.SlotMove) error {
	for s := m.First; s <= m.Last; s++ {
		owner := t.SlotOwner(s)
		by, frozen := t.SlotFrozen(s)
		if frozen && by != c.Cutover {
			return fmt.Errorf("failover: %s slot %d: frozen by cutover %s: %w", c.Op, s, by, ErrMapChanged)
		}
		switch c.Op {
		case OpFreeze:
			if owner != m.From {
				return fmt.Errorf("failover: freeze slot %d: owned by %s, not %s: %w", s, owner, m.From, ErrMapChanged)
			}
		case OpFlip:
			if owner != m.From && owner != m.To {
				return fmt.Errorf("failover: flip slot %d: owned by %s, not %s or %s: %w", s, owner, m.From, m.To, ErrMapChanged)
			}
			if owner == m.From && !frozen {
				// Flipping an unfrozen slot would skip the barrier.
				return fmt.Errorf("failover: flip slot %d: not frozen: %w", s, ErrMapChanged)
			}
		}
	}
	var err error
	switch c.Op {
	case OpFreeze:
		err = t.Freeze(m.SlotRange, c.Cutover)
	case OpFlip:
		if err = t.Assign(m.SlotRange, m.To); err == nil {
			err = t.Unfreeze(m.SlotRange)
		}
	case OpUnfreeze:
		err = t.Unfreeze(m.SlotRange)
	default:
		err = fmt.Errorf("failover: unknown map edit %q", c.Op)
	}
	return err
}

func (c Change) applyKey(t *router.Table, k KeyMove) error {
	owner := t.Owner(k.Key)
	frozenBy := ""
	for _, f := range t.FrozenKeys() {
		if f.Key == k.Key {
			frozenBy = f.Cutover
		}
	}
	if frozenBy != "" && frozenBy != c.Cutover {
		return fmt.Errorf("failover: %s key %q: frozen by cutover %s: %w", c.Op, k.Key, frozenBy, ErrMapChanged)
	}
	id := ""
	if owner != nil {
		id = owner.ID
	}
	switch c.Op {
	case OpFreeze:
		if id != k.From {
			return fmt.Errorf("failover: freeze key %q: served by %s, not %s: %w", k.Key, id, k.From, ErrMapChanged)
		}
		return t.FreezeKey(k.Key, c.Cutover)
	case OpFlip:
		if id != k.From && id != k.To {
			return fmt.Errorf("failover: flip key %q: served by %s, not %s or %s: %w", k.Key, id, k.From, k.To, ErrMapChanged)
		}
		if id == k.From && frozenBy == "" {
			return fmt.Errorf("failover: flip key %q: not frozen: %w", k.Key, ErrMapChanged)
		}
		if err := t.SetWhitelist(k.Key, k.To); err != nil {
			return err
		}
		t.UnfreezeKey(k.Key)
		return nil
	case OpUnfreeze:
		t.UnfreezeKey(k.Key)
		return nil
	}
	return fmt.Errorf("failover: unknown map edit %q", c.Op)
}
