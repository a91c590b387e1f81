package router

import (
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// CellState is the lifecycle state of a cell.
type CellState string

// Cell states. A cell that owns slots must not be offline.
const (
	StateActive   CellState = "active"   // owns slots and accepts their traffic
	StateDraining CellState = "draining" // being emptied; still serves what it owns
	StateFenced   CellState = "fenced"   // cut off (IDC lost); accepts nothing
	StateOffline  CellState = "offline"  // out of service; may own nothing
)

// ParseCellState checks a state name.
func ParseCellState(s string) (CellState, error) {
	switch st := CellState(s); st {
	case StateActive, StateDraining, StateFenced, StateOffline:
		return st, nil
	}
	return "", fmt.Errorf("router: cell state %q (want active, draining, fenced or offline): %w", s, ErrBadCell)
}

// Cell is a unit that owns slots and runs the whole chain in one IDC.
type Cell struct {
	ID        string    `json:"id"`
	IDC       string    `json:"idc"`
	State     CellState `json:"state"`
	Endpoints []string  `json:"endpoints,omitempty"`
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// Check reports whether the cell's fields are well formed.
func (c Cell) Check() error {
	if !nameRe.MatchString(c.ID) {
		return fmt.Errorf("router: cell id %q (want 1-63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric): %w", c.ID, ErrBadCell)
	}
	if !nameRe.MatchString(c.IDC) {
		return fmt.Errorf("router: cell %s: idc %q (want 1-63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric): %w", c.ID, c.IDC, ErrBadCell)
	}
	if _, err := ParseCellState(string(c.State)); err != nil {
		return fmt.Errorf("router: cell %s: %w", c.ID, err)
	}
	for _, ep := range c.Endpoints {
		if ep == "" || len(ep) > 256 || strings.ContainsAny(ep, " \t\r\n") || !utf8.ValidString(ep) {
			return fmt.Errorf("router: cell %s: endpoint %q (want a non-empty address without spaces, at most 256 bytes): %w", c.ID, ep, ErrBadCell)
		}
	}
	return nil
}

func (c Cell) clone() Cell {
	c.Endpoints = slices.Clone(c.Endpoints)
	return c
}

// WhitelistEntry pins one exact key to a cell.
type WhitelistEntry struct {
	Key  string `json:"key"`
	Cell string `json:"cell"`
}

// FrozenKey is a key (usually a whitelisted one) frozen by a cutover.
type FrozenKey struct {
	Key     string `json:"key"`
	Cutover string `json:"cutover"`
}

type slotEntry struct {
	owner  uint16 // index+1 into Table.cells; 0 = no owner
	freeze uint16 // index+1 into Table.cutovers; 0 = not frozen
}

type keyEntry struct {
	key string
	ref uint16 // index+1 into cells (whitelist) or cutovers (frozen keys)
}

// Table is the shard map: cells, slot owners, frozen slots and keys, and the
// whitelist, at one epoch.
//
// A Table is an immutable value once sealed: tables returned by Decode, by a
// store or a watcher are sealed and may be shared between goroutines freely.
// NewTable and Clone return private, mutable tables; mutating a sealed table
// panics (a programmer error).
type Table struct {
	epoch     uint64
	slotCount int
	mask      uint64
	cells     []Cell
	slots     []slotEntry
	cutovers  []string
	whitelist map[uint64]keyEntry // by routing hash of the key
	frozen    map[uint64]keyEntry // frozen keys, by routing hash
	sealed    bool

	// pinFilter, built by Seal, has the bit h>>pinShift set for the hash h of
	// every whitelisted and frozen key, so that Lookup on a sealed table
	// skips both map probes for almost every key (the probe costs about as
	// much as hashing the key). nil when there are no such keys.
	pinFilter []uint64
	pinShift  uint
}

// NewTable returns an empty, mutable table of slotCount slots at epoch 0.
func NewTable(slotCount int) (*Table, error) {
	if err := CheckSlotCount(slotCount); err != nil {
		return nil, err
	}
	return &Table{
		slotCount: slotCount,
		mask:      uint64(slotCount - 1),
		slots:     make([]slotEntry, slotCount),
		whitelist: map[uint64]keyEntry{},
		frozen:    map[uint64]keyEntry{},
	}, nil
}

// Clone returns a mutable deep copy.
func (t *Table) Clone() *Table {
	c := *t
	c.sealed = false
	c.cells = make([]Cell, len(t.cells))
	for i, cell := range t.cells {
		c.cells[i] = cell.clone()
	}
	c.slots = slices.Clone(t.slots)
	c.cutovers = slices.Clone(t.cutovers)
	c.whitelist = make(map[uint64]keyEntry, len(t.whitelist))
	for k, v := range t.whitelist {
		c.whitelist[k] = v
	}
	c.frozen = make(map[uint64]keyEntry, len(t.frozen))
	for k, v := range t.frozen {
		c.frozen[k] = v
	}
	return &c
}

// Seal makes the table immutable. It returns t for chaining.
func (t *Table) Seal() *Table {
	if t.sealed { // shared already: must not write
		return t
	}
	t.buildPinFilter()
	t.sealed = true
	return t
}

func (t *Table) buildPinFilter() {
	n := len(t.whitelist) + len(t.frozen)
	if n == 0 {
		t.pinFilter, t.pinShift = nil, 0
		return
	}
	// 32 bits per key, at least 64: under 3 % false positives.
	logBits := max(6, bits.Len(uint(n-1))+5)
	f := make([]uint64, 1<<(logBits-6))
	t.pinShift = uint(64 - logBits)
	for _, m := range []map[uint64]keyEntry{t.whitelist, t.frozen} {
		for h := range m {
			i := h >> t.pinShift
			f[i>>6] |= 1 << (i & 63)
		}
	}
	t.pinFilter = f
}

// mayBePinned reports whether a key of routing hash h may be whitelisted or
// frozen; false means it certainly is not.
func (t *Table) mayBePinned(h uint64) bool {
	if !t.sealed {
		return len(t.whitelist)+len(t.frozen) > 0
	}
	if t.pinFilter == nil {
		return false
	}
	i := h >> t.pinShift
	return t.pinFilter[i>>6]&(1<<(i&63)) != 0
}

// Sealed reports whether the table is immutable.
func (t *Table) Sealed() bool { return t.sealed }

func (t *Table) mustMutable() {
	if t.sealed {
		panic("router: mutating a sealed Table; Clone it first")
	}
}

// Epoch is the table's version; every change to the map adds one.
func (t *Table) Epoch() uint64 { return t.epoch }

// SlotCount is the number of slots, fixed at creation.
func (t *Table) SlotCount() int { return t.slotCount }

// Route is the answer to a lookup.
type Route struct {
	Slot        int    // the key's slot
	Cell        *Cell  // the owner; nil only in an unvalidated table; do not modify
	Frozen      bool   // no cell may accept writes for the key right now
	Cutover     string // the cutover that froze it, when Frozen
	Whitelisted bool   // the owner comes from the whitelist, not the slot
	Epoch       uint64 // the table's epoch
}

// Lookup routes a key: the whitelist first, then the key's slot. Slot-bearing
// IDs route by the hash they carry. It does not allocate.
func (t *Table) Lookup(key string) Route {
	// Scalars, one composite literal at the end: building a Route in place
	// and copying it out cost a third of the lookup in store-forwarding stalls.
	slot, cell, whitelisted, frozenBy := t.route(key)
	var cutover string
	if frozenBy != 0 {
		cutover = t.cutovers[frozenBy-1]
	}
	return Route{Slot: slot, Cell: cell, Frozen: frozenBy != 0, Cutover: cutover, Whitelisted: whitelisted, Epoch: t.epoch}
}

// route is Lookup without building a Route: frozenBy is the index+1 of the
// cutover that froze the key (0: not frozen).
func (t *Table) route(key string) (slot int, cell *Cell, whitelisted bool, frozenBy uint16) {
	h, isID := idHash(key)
	if !isID {
		h = Hash(key)
	}
	slot = int(h & t.mask)
	if t.mayBePinned(h) {
		if e, ok := t.frozen[h]; ok && (isID || e.key == key) {
			frozenBy = e.ref
		}
		if e, ok := t.whitelist[h]; ok && (isID || e.key == key) {
			return slot, &t.cells[e.ref-1], true, frozenBy
		}
	}
	se := t.slots[slot]
	if se.owner != 0 {
		cell = &t.cells[se.owner-1]
	}
	if frozenBy == 0 {
		frozenBy = se.freeze
	}
	return slot, cell, false, frozenBy
}

// Owner returns the cell that owns key (whitelist first, then slot), or nil if
// the key's slot has no owner in an unvalidated table. Do not modify the cell.
func (t *Table) Owner(key string) *Cell {
	_, cell, _, _ := t.route(key)
	return cell
}

// Slot returns the slot key routes to in this table (IDs by the hash they carry).
func (t *Table) Slot(key string) int { return KeySlot(key, t.slotCount) }

// Cells returns a copy of the cells, sorted by ID.
func (t *Table) Cells() []Cell {
	out := make([]Cell, len(t.cells))
	for i, c := range t.cells {
		out[i] = c.clone()
	}
	slices.SortFunc(out, func(a, b Cell) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Cell returns a copy of the named cell.
func (t *Table) Cell(id string) (Cell, bool) {
	i := t.cellIndex(id)
	if i < 0 {
		return Cell{}, false
	}
	return t.cells[i].clone(), true
}

func (t *Table) cellIndex(id string) int {
	for i := range t.cells {
		if t.cells[i].ID == id {
			return i
		}
	}
	return -1
}

func (t *Table) mustCell(id string) (int, error) {
	i := t.cellIndex(id)
	if i < 0 {
		return 0, fmt.Errorf("router: cell %q: %w", id, ErrUnknownCell)
	}
	return i, nil
}

// SlotOwner returns the ID of the cell owning slot ("" if none).
func (t *Table) SlotOwner(slot int) string {
	if slot < 0 || slot >= t.slotCount || t.slots[slot].owner == 0 {
		return ""
	}
	return t.cells[t.slots[slot].owner-1].ID
}

// SlotFrozen reports whether slot is frozen and by which cutover.
func (t *Table) SlotFrozen(slot int) (cutover string, frozen bool) {
	if slot < 0 || slot >= t.slotCount || t.slots[slot].freeze == 0 {
		return "", false
	}
	return t.cutovers[t.slots[slot].freeze-1], true
}

// SlotsOf returns the slots cell owns, ascending.
func (t *Table) SlotsOf(cell string) []int {
	i := t.cellIndex(cell)
	if i < 0 {
		return nil
	}
	var out []int
	for s, e := range t.slots {
		if int(e.owner) == i+1 {
			out = append(out, s)
		}
	}
	return out
}

// OwnerRange is a run of consecutive slots with one owner.
type OwnerRange struct {
	SlotRange
	Cell string `json:"cell"`
}

// OwnerRanges returns the slot owners as maximal runs ("" for unowned slots).
func (t *Table) OwnerRanges() []OwnerRange {
	var out []OwnerRange
	for s := range t.slots {
		owner := t.SlotOwner(s)
		if n := len(out); n > 0 && out[n-1].Cell == owner {
			out[n-1].Last = s
			continue
		}
		out = append(out, OwnerRange{SlotRange{s, s}, owner})
	}
	return out
}

// FrozenRange is a run of consecutive slots frozen by one cutover.
type FrozenRange struct {
	SlotRange
	Cutover string `json:"cutover"`
}

// FrozenRanges returns the frozen slots as maximal runs.
func (t *Table) FrozenRanges() []FrozenRange {
	var out []FrozenRange
	for s := range t.slots {
		c, ok := t.SlotFrozen(s)
		if !ok {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Last == s-1 && out[n-1].Cutover == c {
			out[n-1].Last = s
			continue
		}
		out = append(out, FrozenRange{SlotRange{s, s}, c})
	}
	return out
}

// Whitelist returns the whitelist sorted by key.
func (t *Table) Whitelist() []WhitelistEntry {
	out := make([]WhitelistEntry, 0, len(t.whitelist))
	for _, e := range t.whitelist {
		out = append(out, WhitelistEntry{Key: e.key, Cell: t.cells[e.ref-1].ID})
	}
	slices.SortFunc(out, func(a, b WhitelistEntry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// FrozenKeys returns the frozen keys sorted by key.
func (t *Table) FrozenKeys() []FrozenKey {
	out := make([]FrozenKey, 0, len(t.frozen))
	for _, e := range t.frozen {
		out = append(out, FrozenKey{Key: e.key, Cutover: t.cutovers[e.ref-1]})
	}
	slices.SortFunc(out, func(a, b FrozenKey) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// --- mutation (private tables only) ---

// SetEpoch sets the epoch. Stores call it; operators never need to.
func (t *Table) SetEpoch(e uint64) { t.mustMutable(); t.epoch = e }

// AddCell adds a cell.
func (t *Table) AddCell(c Cell) error {
	t.mustMutable()
	if c.State == "" {
		c.State = StateActive
	}
	if err := c.Check(); err != nil {
		return err
	}
	if t.cellIndex(c.ID) >= 0 {
		return fmt.Errorf("router: add cell %q: %w", c.ID, ErrDuplicateCell)
	}
	if len(t.cells) >= 1<<16-1 {
		return fmt.Errorf("router: add cell %q: too many cells: %w", c.ID, ErrBadCell)
	}
	t.cells = append(t.cells, c.clone())
	return nil
}

// RemoveCell removes a cell that owns no slot and no whitelisted key.
func (t *Table) RemoveCell(id string) error {
	t.mustMutable()
	i, err := t.mustCell(id)
	if err != nil {
		return err
	}
	ref := uint16(i + 1)
	for _, e := range t.slots {
		if e.owner == ref {
			return fmt.Errorf("router: remove cell %q: it owns slots: %w", id, ErrCellInUse)
		}
	}
	for _, e := range t.whitelist {
		if e.ref == ref {
			return fmt.Errorf("router: remove cell %q: whitelisted key %q points at it: %w", id, e.key, ErrCellInUse)
		}
	}
	t.cells = slices.Delete(t.cells, i, i+1)
	for s := range t.slots {
		if t.slots[s].owner > ref {
			t.slots[s].owner--
		}
	}
	for h, e := range t.whitelist {
		if e.ref > ref {
			e.ref--
			t.whitelist[h] = e
		}
	}
	return nil
}

// SetCellState changes a cell's state.
func (t *Table) SetCellState(id string, st CellState) error {
	t.mustMutable()
	if _, err := ParseCellState(string(st)); err != nil {
		return err
	}
	i, err := t.mustCell(id)
	if err != nil {
		return err
	}
	t.cells[i].State = st
	return nil
}

// SetCellEndpoints replaces a cell's endpoints.
func (t *Table) SetCellEndpoints(id string, eps []string) error {
	t.mustMutable()
	i, err := t.mustCell(id)
	if err != nil {
		return err
	}
	c := t.cells[i]
	c.Endpoints = slices.Clone(eps)
	if err := c.Check(); err != nil {
		return err
	}
	t.cells[i] = c
	return nil
}

// Assign makes cell the owner of every slot in r. Freezes are unchanged.
func (t *Table) Assign(r SlotRange, cell string) error {
	t.mustMutable()
	if err := r.Check(t.slotCount); err != nil {
		return err
	}
	i, err := t.mustCell(cell)
	if err != nil {
		return err
	}
	for s := r.First; s <= r.Last; s++ {
		t.slots[s].owner = uint16(i + 1)
	}
	return nil
}

// Freeze marks every slot in r frozen by cutover.
func (t *Table) Freeze(r SlotRange, cutover string) error {
	t.mustMutable()
	if err := r.Check(t.slotCount); err != nil {
		return err
	}
	ref, err := t.cutoverRef(cutover)
	if err != nil {
		return err
	}
	for s := r.First; s <= r.Last; s++ {
		t.slots[s].freeze = ref
	}
	return nil
}

// Unfreeze clears the freeze of every slot in r.
func (t *Table) Unfreeze(r SlotRange) error {
	t.mustMutable()
	if err := r.Check(t.slotCount); err != nil {
		return err
	}
	for s := r.First; s <= r.Last; s++ {
		t.slots[s].freeze = 0
	}
	return nil
}

// FreezeKey marks one exact key frozen by cutover.
func (t *Table) FreezeKey(key, cutover string) error {
	t.mustMutable()
	if err := checkPinnedKey(key); err != nil {
		return err
	}
	ref, err := t.cutoverRef(cutover)
	if err != nil {
		return err
	}
	h := Hash(key)
	if e, ok := t.frozen[h]; ok && e.key != key {
		return fmt.Errorf("router: freeze key %q: hash collides with frozen key %q: %w", key, e.key, ErrBadKey)
	}
	t.frozen[h] = keyEntry{key: key, ref: ref}
	return nil
}

// UnfreezeKey clears the freeze of one key; unfreezing a key that is not
// frozen is not an error.
func (t *Table) UnfreezeKey(key string) {
	t.mustMutable()
	h := Hash(key)
	if e, ok := t.frozen[h]; ok && e.key == key {
		delete(t.frozen, h)
	}
}

// SetWhitelist pins key to cell, ahead of its slot's owner.
func (t *Table) SetWhitelist(key, cell string) error {
	t.mustMutable()
	if err := checkPinnedKey(key); err != nil {
		return err
	}
	i, err := t.mustCell(cell)
	if err != nil {
		return err
	}
	h := Hash(key)
	if e, ok := t.whitelist[h]; ok && e.key != key {
		return fmt.Errorf("router: whitelist %q: hash collides with whitelisted key %q: %w", key, e.key, ErrBadKey)
	}
	t.whitelist[h] = keyEntry{key: key, ref: uint16(i + 1)}
	return nil
}

// RemoveWhitelist unpins key.
func (t *Table) RemoveWhitelist(key string) error {
	t.mustMutable()
	h := Hash(key)
	if e, ok := t.whitelist[h]; !ok || e.key != key {
		return fmt.Errorf("router: whitelist rm %q: %w", key, ErrNotWhitelisted)
	}
	delete(t.whitelist, h)
	return nil
}

// checkPinnedKey is CheckKey for whitelisted and frozen keys, which are
// matched by Hash(key): a well-formed ID routes by the hash it carries, so
// pinning one would silently have no effect.
func checkPinnedKey(key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if _, ok := idHash(key); ok {
		return fmt.Errorf("router: key %q is a slot-bearing ID, which routes with the key it was minted for; pin that key: %w", key, ErrBadKey)
	}
	return nil
}

func (t *Table) cutoverRef(name string) (uint16, error) {
	if name == "" || len(name) > 128 || strings.ContainsAny(name, " \t\r\n/") || !utf8.ValidString(name) {
		return 0, fmt.Errorf("router: cutover name %q (want 1-128 characters without spaces or '/'): %w", name, ErrBadKey)
	}
	if i := slices.Index(t.cutovers, name); i >= 0 {
		return uint16(i + 1), nil
	}
	if len(t.cutovers) >= 1<<16-1 {
		t.compactCutovers()
		if len(t.cutovers) >= 1<<16-1 {
			return 0, fmt.Errorf("router: too many concurrent cutovers: %w", ErrBadKey)
		}
	}
	t.cutovers = append(t.cutovers, name)
	return uint16(len(t.cutovers)), nil
}

// compactCutovers drops cutover names nothing refers to any more.
func (t *Table) compactCutovers() {
	used := make([]bool, len(t.cutovers)+1)
	for _, e := range t.slots {
		used[e.freeze] = true
	}
	for _, e := range t.frozen {
		used[e.ref] = true
	}
	remap := make([]uint16, len(t.cutovers)+1)
	var kept []string
	for i, name := range t.cutovers {
		if used[i+1] {
			kept = append(kept, name)
			remap[i+1] = uint16(len(kept))
		}
	}
	for s := range t.slots {
		t.slots[s].freeze = remap[t.slots[s].freeze]
	}
	for h, e := range t.frozen {
		e.ref = remap[e.ref]
		t.frozen[h] = e
	}
	t.cutovers = kept
}

// Validate reports every inconsistency: a bad slot count, a malformed or
// duplicate cell, an unowned slot, a slot owned by an offline cell, a
// whitelisted key pinned to an offline cell. The error is a *ValidationError.
func (t *Table) Validate() error {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if err := CheckSlotCount(t.slotCount); err != nil {
		add("slot count %d is not a power of two from %d to %d", t.slotCount, MinSlotCount, MaxSlotCount)
	}
	if len(t.cells) == 0 {
		add("no cells")
	}
	seen := map[string]bool{}
	for _, c := range t.cells {
		if err := c.Check(); err != nil {
			add("%v", strings.TrimPrefix(err.Error(), "router: "))
		}
		if seen[c.ID] {
			add("cell %q listed twice", c.ID)
		}
		seen[c.ID] = true
	}
	var unowned []int
	offline := map[string][]int{}
	for s, e := range t.slots {
		switch {
		case e.owner == 0:
			unowned = append(unowned, s)
		case t.cells[e.owner-1].State == StateOffline:
			id := t.cells[e.owner-1].ID
			offline[id] = append(offline[id], s)
		}
	}
	if len(unowned) > 0 {
		add("slots %s have no owner", FormatSlotRanges(rangesOf(unowned)))
	}
	for _, c := range t.Cells() {
		if s := offline[c.ID]; len(s) > 0 {
			add("slots %s are owned by offline cell %q", FormatSlotRanges(rangesOf(s)), c.ID)
		}
	}
	for _, e := range t.Whitelist() {
		if c, _ := t.Cell(e.Cell); c.State == StateOffline {
			add("whitelisted key %q is pinned to offline cell %q", e.Key, e.Cell)
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return &ValidationError{Epoch: t.epoch, Problems: probs}
}
