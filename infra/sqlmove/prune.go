package sqlmove

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cellkit/cellkit/router"
)

// Removed counts rows Prune deleted from one cell.
type Removed struct {
	Cell  string
	Rows  int64
	Slots int
	Keys  int
}

func (r Removed) String() string {
	var what []string
	if r.Slots > 0 {
		what = append(what, plural(r.Slots, "slot"))
	}
	if r.Keys > 0 {
		what = append(what, plural(r.Keys, "key"))
	}
	if len(what) == 0 {
		return plural(int(r.Rows), "row")
	}
	return plural(int(r.Rows), "row") + " of " + strings.Join(what, " and ")
}

// PruneReport is what Prune did.
type PruneReport struct {
	// Sources are the rows deleted from copies' sources, by cell.
	Sources []Removed
	// Targets are the rows deleted from the targets of copies that were
	// abandoned or rolled back (the target does not own them), by cell.
	Targets []Removed
	// Entries finished by this call, by their new state.
	Pruned, Superseded, Abandoned int
	// Pending counts the entries left for a later call: some of their
	// slots or keys are frozen, or still at the source while others left.
	Pending int
}

// String is "pruned 1,234 rows of 64 slots from a1", or "" when the call
// changed nothing.
func (r *PruneReport) String() string {
	var parts []string
	if len(r.Sources) > 0 {
		s := make([]string, len(r.Sources))
		for i, c := range r.Sources {
			s[i] = c.String() + " from " + c.Cell
		}
		parts = append(parts, "pruned "+strings.Join(s, ", "))
	}
	if len(r.Targets) > 0 {
		s := make([]string, len(r.Targets))
		for i, c := range r.Targets {
			s[i] = c.String() + " at " + c.Cell
		}
		parts = append(parts, "removed the rows of unfinished or rolled-back copies: "+strings.Join(s, ", "))
	}
	if r.Superseded > 0 {
		parts = append(parts, plural(r.Superseded, "copy", "copies")+" superseded (back at the source)")
	}
	if r.Abandoned > 0 {
		parts = append(parts, plural(r.Abandoned, "copy", "copies")+" abandoned")
	}
	if r.Pruned > 0 {
		parts = append(parts, plural(r.Pruned, "copy", "copies")+" fully pruned")
	}
	return strings.Join(parts, "; ")
}

func addRemoved(list *[]Removed, cell string, rows int64, slots, keys int) {
	if rows == 0 && slots == 0 && keys == 0 {
		return
	}
	for i := range *list {
		if (*list)[i].Cell == cell {
			(*list)[i].Rows += rows
			(*list)[i].Slots += slots
			(*list)[i].Keys += keys
			return
		}
	}
	*list = append(*list, Removed{Cell: cell, Rows: rows, Slots: slots, Keys: keys})
	slices.SortFunc(*list, func(a, b Removed) int { return strings.Compare(a.Cell, b.Cell) })
}

// Prune implements failover.Pruner: see PruneAll.
func (m *Mover) Prune(ctx context.Context, cutover string, t *router.Table) (string, error) {
	r, err := m.PruneAll(ctx, t)
	if r == nil {
		return "", err
	}
	if s := r.String(); s != "" {
		m.cfg.Logger.Info("sqlmove: "+s, "cutover", cutover, "epoch", t.Epoch())
	}
	return r.String(), err
}

// PruneAll finishes, on map t, the journal entries of every cell's
// database that are not final, of any cutover:
//
//   - copied: for each slot and key of the entry that is not frozen and
//     that t gives to another cell than the source, delete the source's
//     rows of it that the entry copied: a slot's rows but those of the
//     owner keys its copy left out, of keys pinned to the source now and
//     of frozen keys. When all of them have left the source the entry is pruned;
//     when all are back at the source (a rolled-back stage) it is
//     superseded; otherwise it stays copied for a later call.
//   - copying, with nothing frozen: the copy was abandoned (the stage was
//     unfrozen without a flip); it is marked so.
//
// In both cases the target's rows of slots and keys t does not give to
// the target are deleted too, with the same exceptions (what an abandoned
// or rolled-back copy left there). No row of a cell that t says owns it, and no row of a frozen
// slot or key, is ever deleted; every deleting transaction re-reads the
// map (Config.Table) before it commits. Idempotent.
func (m *Mover) PruneAll(ctx context.Context, t *router.Table) (*PruneReport, error) {
	rep := &PruneReport{}
	var errs []error
	for _, cell := range sortedKeys(m.cfg.Cells) {
		es, err := m.entries(ctx, cell, StateCopying, StateCopied)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range es {
			if err := m.pruneEntry(ctx, t, cell, &es[i], rep); err != nil {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				return rep, errors.Join(append(errs, context.Cause(ctx))...)
			}
		}
	}
	return rep, errors.Join(errs...)
}

// pitem is a slot or key of an entry, on the map being pruned to.
type pitem struct {
	slot   int
	key    string
	excl   []string // a slot: the owner keys its copy left out
	frozen bool
	owner  string // "" when t gives it to nobody
}

func itemsOf(t *router.Table, e *Entry) []pitem {
	var out []pitem
	for _, r := range e.Slots {
		for s := r.First; s <= r.Last; s++ {
			_, frozen := t.SlotFrozen(s)
			out = append(out, pitem{slot: s, excl: e.Excluded[s], frozen: frozen, owner: t.SlotOwner(s)})
		}
	}
	for _, k := range e.Keys {
		r := t.Lookup(k)
		it := pitem{slot: r.Slot, key: k, frozen: r.Frozen}
		if r.Cell != nil {
			it.owner = r.Cell.ID
		}
		out = append(out, it)
	}
	return out
}

func (m *Mover) pruneEntry(ctx context.Context, t *router.Table, cell string, e *Entry, rep *PruneReport) error {
	for _, c := range []string{e.From, e.To} {
		if _, ok := m.cfg.Cells[c]; !ok {
			return fmt.Errorf("sqlmove: journal entry %s at %s: cell %s has no database in the mover's configuration", e.ID, cell, c)
		}
	}
	if e.To != cell {
		return fmt.Errorf("sqlmove: journal entry %s at %s names target %s", e.ID, cell, e.To)
	}
	items := itemsOf(t, e)
	was := e.State
	var errs []error
	var srcRows, dstRows int64
	var srcSlots, srcKeys, dstSlots, dstKeys int
	back, gone, pending := 0, 0, 0
	if e.State == StateCopying {
		for _, it := range items {
			if it.frozen {
				// The copy may be running, or will be re-run.
				rep.Pending++
				return nil
			}
		}
	}
	for _, it := range items {
		if it.frozen || it.owner == "" {
			pending++
			continue
		}
		if e.State == StateCopied {
			if it.owner == e.From {
				back++
			} else {
				n, err := m.clean(ctx, t, e.From, it)
				switch {
				case err != nil:
					errs = append(errs, err)
					pending++
				default:
					gone++
					srcRows += n
				}
				switch {
				case n == 0:
				case it.key != "":
					srcKeys++
				default:
					srcSlots++
				}
			}
		}
		if it.owner != e.To {
			n, err := m.clean(ctx, t, e.To, it)
			if err != nil {
				errs = append(errs, err)
				pending++
				continue
			}
			if n > 0 {
				dstRows += n
				if it.key != "" {
					dstKeys++
				} else {
					dstSlots++
				}
			}
		}
	}
	now := m.cfg.Clock.Now()
	switch {
	case pending > 0:
	case was == StateCopying:
		e.State = StateAbandoned
	case back == 0:
		e.State = StatePruned
	case gone == 0:
		e.State = StateSuperseded
	}
	changed := e.State != was
	if changed || srcRows > 0 || dstRows > 0 {
		e.PrunedRows += srcRows
		e.CleanedRows += dstRows
		e.UpdatedAt = now
		if changed {
			e.DoneAt = now
		}
		if err := m.updateEntry(ctx, cell, e, was); err != nil {
			errs = append(errs, err)
		}
	}
	switch e.State {
	case StatePruned:
		rep.Pruned++
	case StateSuperseded:
		rep.Superseded++
	case StateAbandoned:
		rep.Abandoned++
	default:
		rep.Pending++
	}
	// Say what a call did; a re-run that finds nothing to do says nothing.
	if changed || srcRows > 0 {
		addRemoved(&rep.Sources, e.From, srcRows, srcSlots, srcKeys)
	}
	addRemoved(&rep.Targets, e.To, dstRows, dstSlots, dstKeys)
	return errors.Join(errs...)
}

// keepAt returns the owner keys of it (a slot) that cell keeps when it
// prunes the slot: those the slot's copy left out (it did not carry their
// rows: another copy did, whose entry prunes them, or none did and they
// are not the entry's to delete), those pinned to the cell, and frozen
// ones (moving right now).
func keepAt(t *router.Table, cell string, it pitem) []string {
	slot := it.slot
	keep := slices.Clone(it.excl)
	for _, w := range t.Whitelist() {
		if w.Cell == cell && t.Slot(w.Key) == slot {
			keep = append(keep, w.Key)
		}
	}
	for _, f := range t.FrozenKeys() {
		if t.Slot(f.Key) == slot {
			keep = append(keep, f.Key)
		}
	}
	return sortedUnique(keep)
}

// prunable reports whether, on map t, cell may delete its rows of it: it
// is neither frozen nor owned by cell, and (a slot) keep are the keys the
// cell keeps.
func prunable(t *router.Table, cell string, it pitem, keep []string) bool {
	if it.key != "" {
		r := t.Lookup(it.key)
		return !r.Frozen && r.Cell != nil && r.Cell.ID != cell
	}
	_, frozen := t.SlotFrozen(it.slot)
	owner := t.SlotOwner(it.slot)
	return !frozen && owner != "" && owner != cell && slices.Equal(keepAt(t, cell, it), keep)
}

// clean deletes cell's rows of it, which t says cell does not own, and
// returns how many it deleted.
func (m *Mover) clean(ctx context.Context, t *router.Table, cell string, it pitem) (int64, error) {
	f := filter{slot: it.slot, key: it.key}
	var keep []string
	if it.key == "" {
		keep = keepAt(t, cell, it)
		f.excl = keep
	}
	if !prunable(t, cell, it, keep) {
		return 0, nil
	}
	tis := make([]tableInfo, len(m.cfg.Tables))
	for i, tb := range m.cfg.Tables {
		tis[i] = tableInfo{Table: tb}
	}
	db := m.cfg.Cells[cell]
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlmove: prune %s at %s: %w", f, cell, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	n, err := deleteRows(ctx, tx, tis, f)
	if err != nil {
		return 0, fmt.Errorf("sqlmove: prune %s at %s: %w", f, cell, err)
	}
	if n > 0 {
		// Fence, as in a copy: the deleted rows stay locked until the
		// commit, so a map that still allows the delete now means no copy
		// into this cell (which would freeze the slot first) can have
		// written them.
		now, err := m.cfg.Table(ctx)
		if err != nil {
			return 0, fmt.Errorf("sqlmove: prune %s at %s: read the map before commit: %w", f, cell, err)
		}
		if !prunable(now, cell, it, keep) {
			return 0, fmt.Errorf("sqlmove: prune %s at %s: %w (epoch %d → %d)", f, cell, ErrMapChanged, t.Epoch(), now.Epoch())
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlmove: prune %s at %s: %w", f, cell, err)
	}
	return n, nil
}
