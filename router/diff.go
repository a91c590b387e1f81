package router

import (
	"fmt"
	"slices"
	"strings"
)

// Diff lists what changed between two tables.
type Diff struct {
	FromEpoch        uint64            `json:"fromEpoch"`
	ToEpoch          uint64            `json:"toEpoch"`
	SlotCount        [2]int            `json:"slotCount,omitzero"` // set only if it differs
	Moved            []SlotMove        `json:"moved,omitempty"`
	Frozen           []FrozenRange     `json:"frozen,omitempty"`
	Unfrozen         []SlotRange       `json:"unfrozen,omitempty"`
	KeysFrozen       []FrozenKey       `json:"keysFrozen,omitempty"`
	KeysUnfrozen     []string          `json:"keysUnfrozen,omitempty"`
	WhitelistAdded   []WhitelistEntry  `json:"whitelistAdded,omitempty"`
	WhitelistRemoved []WhitelistEntry  `json:"whitelistRemoved,omitempty"`
	WhitelistChanged []WhitelistChange `json:"whitelistChanged,omitempty"`
	CellsAdded       []Cell            `json:"cellsAdded,omitempty"`
	CellsRemoved     []Cell            `json:"cellsRemoved,omitempty"`
	CellsChanged     []CellChange      `json:"cellsChanged,omitempty"`
}

// SlotMove is a run of slots whose owner changed from one cell to another.
type SlotMove struct {
	SlotRange
	From string `json:"from"` // "" if the slots had no owner
	To   string `json:"to"`
}

// WhitelistChange is a whitelisted key pinned to a different cell.
type WhitelistChange struct {
	Key  string `json:"key"`
	From string `json:"from"`
	To   string `json:"to"`
}

// CellChange is a cell whose state or endpoints changed.
type CellChange struct {
	ID     string `json:"id"`
	Before Cell   `json:"before"`
	After  Cell   `json:"after"`
}

// Compare returns what changed from a to b. Either may be nil (an empty map).
func Compare(a, b *Table) Diff {
	var d Diff
	if a != nil {
		d.FromEpoch = a.epoch
	}
	if b != nil {
		d.ToEpoch = b.epoch
	}
	if a == nil || b == nil {
		a, b = orEmpty(a, b), orEmpty(b, a)
	}
	if a.slotCount != b.slotCount {
		d.SlotCount = [2]int{a.slotCount, b.slotCount}
	}

	n := max(a.slotCount, b.slotCount)
	for s := 0; s < n; s++ {
		from, to := a.SlotOwner(s), b.SlotOwner(s)
		if from != to {
			if k := len(d.Moved); k > 0 && d.Moved[k-1].Last == s-1 && d.Moved[k-1].From == from && d.Moved[k-1].To == to {
				d.Moved[k-1].Last = s
			} else {
				d.Moved = append(d.Moved, SlotMove{SlotRange{s, s}, from, to})
			}
		}
		ca, fa := a.SlotFrozen(s)
		cb, fb := b.SlotFrozen(s)
		switch {
		case fb && (!fa || ca != cb):
			if k := len(d.Frozen); k > 0 && d.Frozen[k-1].Last == s-1 && d.Frozen[k-1].Cutover == cb {
				d.Frozen[k-1].Last = s
			} else {
				d.Frozen = append(d.Frozen, FrozenRange{SlotRange{s, s}, cb})
			}
		case fa && !fb:
			if k := len(d.Unfrozen); k > 0 && d.Unfrozen[k-1].Last == s-1 {
				d.Unfrozen[k-1].Last = s
			} else {
				d.Unfrozen = append(d.Unfrozen, SlotRange{s, s})
			}
		}
	}

	fka, fkb := keyMap(a.FrozenKeys()), keyMap(b.FrozenKeys())
	for _, k := range b.FrozenKeys() {
		if c, ok := fka[k.Key]; !ok || c != k.Cutover {
			d.KeysFrozen = append(d.KeysFrozen, k)
		}
	}
	for _, k := range a.FrozenKeys() {
		if _, ok := fkb[k.Key]; !ok {
			d.KeysUnfrozen = append(d.KeysUnfrozen, k.Key)
		}
	}

	wa, wb := wlMap(a.Whitelist()), wlMap(b.Whitelist())
	for _, e := range b.Whitelist() {
		switch from, ok := wa[e.Key]; {
		case !ok:
			d.WhitelistAdded = append(d.WhitelistAdded, e)
		case from != e.Cell:
			d.WhitelistChanged = append(d.WhitelistChanged, WhitelistChange{e.Key, from, e.Cell})
		}
	}
	for _, e := range a.Whitelist() {
		if _, ok := wb[e.Key]; !ok {
			d.WhitelistRemoved = append(d.WhitelistRemoved, e)
		}
	}

	for _, c := range b.Cells() {
		old, ok := a.Cell(c.ID)
		switch {
		case !ok:
			d.CellsAdded = append(d.CellsAdded, c)
		case old.IDC != c.IDC || old.State != c.State || !slices.Equal(old.Endpoints, c.Endpoints):
			d.CellsChanged = append(d.CellsChanged, CellChange{c.ID, old, c})
		}
	}
	for _, c := range a.Cells() {
		if _, ok := b.Cell(c.ID); !ok {
			d.CellsRemoved = append(d.CellsRemoved, c)
		}
	}
	return d
}

func orEmpty(t, other *Table) *Table {
	if t != nil {
		return t
	}
	n := DefaultSlotCount
	if other != nil {
		n = other.slotCount
	}
	e, _ := NewTable(n)
	return e
}

func keyMap(ks []FrozenKey) map[string]string {
	m := make(map[string]string, len(ks))
	for _, k := range ks {
		m[k.Key] = k.Cutover
	}
	return m
}

func wlMap(es []WhitelistEntry) map[string]string {
	m := make(map[string]string, len(es))
	for _, e := range es {
		m[e.Key] = e.Cell
	}
	return m
}

// Empty reports whether nothing but (perhaps) the epoch changed.
func (d Diff) Empty() bool { return len(d.Lines()) == 0 }

// MovedSlots is the number of slots whose owner changed.
func (d Diff) MovedSlots() int {
	n := 0
	for _, m := range d.Moved {
		n += m.Len()
	}
	return n
}

// Lines describes the diff for people, one change per line.
func (d Diff) Lines() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if d.SlotCount != [2]int{} {
		add("slot count %d -> %d", d.SlotCount[0], d.SlotCount[1])
	}
	for _, c := range d.CellsAdded {
		add("cell %s added (idc %s, %s%s)", c.ID, c.IDC, c.State, endpoints(c.Endpoints))
	}
	for _, c := range d.CellsRemoved {
		add("cell %s removed", c.ID)
	}
	for _, c := range d.CellsChanged {
		if c.Before.State != c.After.State {
			add("cell %s state %s -> %s", c.ID, c.Before.State, c.After.State)
		}
		if c.Before.IDC != c.After.IDC {
			add("cell %s idc %s -> %s", c.ID, c.Before.IDC, c.After.IDC)
		}
		if !slices.Equal(c.Before.Endpoints, c.After.Endpoints) {
			add("cell %s endpoints [%s] -> [%s]", c.ID, strings.Join(c.Before.Endpoints, " "), strings.Join(c.After.Endpoints, " "))
		}
	}
	for _, m := range d.Moved {
		from := m.From
		if from == "" {
			from = "(none)"
		}
		to := m.To
		if to == "" {
			to = "(none)"
		}
		add("slots %s (%d) %s -> %s", m.SlotRange, m.Len(), from, to)
	}
	for _, f := range d.Frozen {
		add("slots %s frozen by %s", f.SlotRange, f.Cutover)
	}
	for _, r := range d.Unfrozen {
		add("slots %s unfrozen", r)
	}
	for _, k := range d.KeysFrozen {
		add("key %q frozen by %s", k.Key, k.Cutover)
	}
	for _, k := range d.KeysUnfrozen {
		add("key %q unfrozen", k)
	}
	for _, e := range d.WhitelistAdded {
		add("whitelist %q -> %s", e.Key, e.Cell)
	}
	for _, e := range d.WhitelistChanged {
		add("whitelist %q %s -> %s", e.Key, e.From, e.To)
	}
	for _, e := range d.WhitelistRemoved {
		add("whitelist %q removed (was %s)", e.Key, e.Cell)
	}
	return out
}

func endpoints(eps []string) string {
	if len(eps) == 0 {
		return ""
	}
	return ", " + strings.Join(eps, " ")
}
