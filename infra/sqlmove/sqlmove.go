package sqlmove

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/router"
)

// Name is the mover's name in records and progress.
const Name = "copy"

// Mover is the copy data mover: a failover.DataMover that copies a
// stage's rows from the source cells' databases to the targets' and
// verifies them, and a failover.Pruner that deletes them from the sources
// once the flip has landed. Safe for concurrent use, though the runner
// calls it from one goroutine.
type Mover struct {
	cfg Config

	mu       sync.Mutex
	journals map[string]bool // cells whose journal table exists

	hooks hooks
}

// hooks let the package's tests interrupt and tamper at chosen points.
type hooks struct {
	// afterBatch runs after each INSERT batch of a copy.
	afterBatch func(it filter, table string, rows int)
	// beforeVerify runs after a pair's rows are copied, before they are
	// verified.
	beforeVerify func(from, to string)
}

var (
	_ failover.DataMover = (*Mover)(nil)
	_ failover.Pruner    = (*Mover)(nil)
)

// New checks cfg and returns a Mover.
func New(cfg Config) (*Mover, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	cells := make(map[string]DB, len(cfg.Cells))
	for k, v := range cfg.Cells {
		cells[k] = v
	}
	cfg.Cells = cells
	cfg.Tables = slices.Clone(cfg.Tables)
	return &Mover{cfg: cfg, journals: map[string]bool{}}, nil
}

// Name is "copy".
func (m *Mover) Name() string { return Name }

// WaitData copies and verifies the rows of mv (see Copy) and says what it
// did: "copied 1,234 rows of 64 slots a1→b1 in 180ms, verified".
func (m *Mover) WaitData(ctx context.Context, cutover string, mv failover.Movement) (string, error) {
	r, err := m.Copy(ctx, cutover, mv)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// CopyReport is what Copy did.
type CopyReport struct {
	Cutover string
	Pairs   []PairReport
	Took    time.Duration
}

// PairReport is the copy from one source cell to one target cell.
type PairReport struct {
	From, To string
	Slots    []router.SlotRange
	Keys     []string
	// Rows is how many rows the target now holds for the moved slots and
	// keys, verified against the source.
	Rows int64
	// Written is how many rows this run inserted; InPlace counts slots
	// and keys whose rows the target already had (a re-run).
	Written int64
	InPlace int
	// Checksums are per table, over every moved row.
	Checksums map[string]Digest
	// Entry is the journal entry's ID, in the target's database.
	Entry string
}

// SlotCount is the number of slots the pair moved.
func (p PairReport) SlotCount() int {
	n := 0
	for _, r := range p.Slots {
		n += r.Len()
	}
	return n
}

// String is "copied 1,234 rows of 64 slots a1→b1 in 180ms, verified".
func (r *CopyReport) String() string {
	if len(r.Pairs) == 0 {
		return "nothing to copy"
	}
	parts := make([]string, len(r.Pairs))
	inPlace := 0
	for i, p := range r.Pairs {
		var what []string
		if n := p.SlotCount(); n > 0 {
			what = append(what, plural(n, "slot"))
		}
		if n := len(p.Keys); n > 0 {
			what = append(what, plural(n, "key"))
		}
		if len(what) == 0 {
			what = []string{"nothing"}
		}
		parts[i] = fmt.Sprintf("%s of %s %s→%s", plural(int(p.Rows), "row"), strings.Join(what, " and "), p.From, p.To)
		inPlace += p.InPlace
	}
	s := "copied " + strings.Join(parts, ", ") + " in " + round(r.Took).String()
	if inPlace > 0 {
		s += fmt.Sprintf(" (%s already in place)", plural(inPlace, "slot or key", "slots and keys"))
	}
	return s + ", verified"
}

// pair is the part of a movement from one cell to another.
type pair struct {
	from, to string
	slots    []router.SlotRange
	keys     []string
	items    []filter // the slots, then the keys
}

// Copy copies mv's rows from the sources to the targets and verifies them.
// It runs while mv's slots and keys are frozen by cutover at their
// sources (it checks, and refuses with ErrNotFrozen), so nothing writes
// them anywhere.
//
// For each source→target pair and each slot, in one target transaction:
// delete the target's rows of the slot, then insert the source's, in
// batches; the owner keys the whitelist pins (anywhere) or the movement
// moves as keys are left out on both sides, since a pin overrides its
// slot. Each moved key is handled the same way by owner. A slot or key
// whose rows the target already has, by digest, is skipped, so a re-run
// after a crash resumes where it stopped. Then every slot and key is
// verified (row counts and digests per table, source against target), and
// the copy recorded in the target's journal (JournalTable) as copied.
func (m *Mover) Copy(ctx context.Context, cutover string, mv failover.Movement) (*CopyReport, error) {
	start := m.cfg.Clock.Now()
	t, err := m.cfg.Table(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlmove: read the map: %w", err)
	}
	pairs, err := m.plan(t, cutover, mv)
	if err != nil {
		return nil, err
	}
	rep := &CopyReport{Cutover: cutover}
	for _, p := range pairs {
		pr, err := m.copyPair(ctx, cutover, mv, p)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		rep.Pairs = append(rep.Pairs, pr)
	}
	rep.Took = m.cfg.Clock.Now().Sub(start)
	m.cfg.Logger.Info("sqlmove: "+rep.String(), "cutover", cutover)
	return rep, nil
}

// plan groups mv by source and target, checks it against the map and
// builds the items to copy.
func (m *Mover) plan(t *router.Table, cutover string, mv failover.Movement) ([]*pair, error) {
	byPair := map[[2]string]*pair{}
	get := func(from, to string) (*pair, error) {
		for _, c := range []string{from, to} {
			if _, ok := m.cfg.Cells[c]; !ok {
				return nil, fmt.Errorf("%w: cell %q has no database in the mover's configuration", ErrBadMovement, c)
			}
		}
		if from == to {
			return nil, fmt.Errorf("%w: %s to itself", ErrBadMovement, from)
		}
		k := [2]string{from, to}
		if byPair[k] == nil {
			byPair[k] = &pair{from: from, to: to}
		}
		return byPair[k], nil
	}
	seenSlot := map[int]bool{}
	for _, s := range mv.Slots {
		if err := s.Check(t.SlotCount()); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadMovement, err)
		}
		p, err := get(s.From, s.To)
		if err != nil {
			return nil, err
		}
		for slot := s.First; slot <= s.Last; slot++ {
			if seenSlot[slot] {
				return nil, fmt.Errorf("%w: slot %d moves twice", ErrBadMovement, slot)
			}
			seenSlot[slot] = true
		}
		p.slots = append(p.slots, s.SlotRange)
	}
	moving := map[string]bool{}
	for _, k := range mv.Keys {
		if err := router.CheckKey(k.Key); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadMovement, err)
		}
		if moving[k.Key] {
			return nil, fmt.Errorf("%w: key %q moves twice", ErrBadMovement, k.Key)
		}
		moving[k.Key] = true
		p, err := get(k.From, k.To)
		if err != nil {
			return nil, err
		}
		p.keys = append(p.keys, k.Key)
	}
	excl := exclusions(t, mv)
	var out []*pair
	for _, k := range sortedPairKeys(byPair) {
		p := byPair[k]
		slices.SortFunc(p.slots, func(a, b router.SlotRange) int { return a.First - b.First })
		slices.Sort(p.keys)
		for _, r := range p.slots {
			for s := r.First; s <= r.Last; s++ {
				p.items = append(p.items, filter{slot: s, excl: excl[s]})
			}
		}
		for _, k := range p.keys {
			p.items = append(p.items, filter{slot: t.Slot(k), key: k})
		}
		for _, it := range p.items {
			if err := checkFrozen(t, cutover, p, it, excl); err != nil {
				return nil, err
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func sortedPairKeys(m map[[2]string]*pair) [][2]string {
	out := make([][2]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return out
}

// exclusions returns, per slot, the owner keys a slot copy leaves out:
// every key the whitelist pins (a pin overrides the slot: the key's rows
// live where it is pinned), every frozen key and every key mv moves by
// itself.
func exclusions(t *router.Table, mv failover.Movement) map[int][]string {
	out := map[int][]string{}
	add := func(k string) { s := t.Slot(k); out[s] = append(out[s], k) }
	for _, w := range t.Whitelist() {
		add(w.Key)
	}
	for _, f := range t.FrozenKeys() {
		add(f.Key)
	}
	for _, k := range mv.Keys {
		add(k.Key)
	}
	for s := range out {
		out[s] = sortedUnique(out[s])
	}
	return out
}

// checkFrozen checks, on map t, that item it of p is frozen by cutover,
// owned by p's source, and (a slot) pins the same keys as when the copy
// was planned (excl).
func checkFrozen(t *router.Table, cutover string, p *pair, it filter, excl map[int][]string) error {
	if it.key != "" {
		r := t.Lookup(it.key)
		owner := ""
		if r.Cell != nil {
			owner = r.Cell.ID
		}
		if !r.Frozen || r.Cutover != cutover || owner != p.from {
			return fmt.Errorf("%w: key %q is served by %q, frozen %v by %q; want frozen by %s at %s", ErrNotFrozen, it.key, owner, r.Frozen, r.Cutover, cutover, p.from)
		}
		return nil
	}
	by, frozen := t.SlotFrozen(it.slot)
	if owner := t.SlotOwner(it.slot); !frozen || by != cutover || owner != p.from {
		return fmt.Errorf("%w: slot %d is owned by %q, frozen %v by %q; want frozen by %s at %s", ErrNotFrozen, it.slot, owner, frozen, by, cutover, p.from)
	}
	if !slices.Equal(excl[it.slot], it.excl) {
		return fmt.Errorf("%w: the keys pinned in slot %d changed from %q to %q during the copy", ErrMapChanged, it.slot, it.excl, excl[it.slot])
	}
	return nil
}

func (it filter) String() string {
	if it.key != "" {
		return fmt.Sprintf("key %q", it.key)
	}
	return fmt.Sprintf("slot %d", it.slot)
}

// copyPair copies, verifies and journals one pair.
func (m *Mover) copyPair(ctx context.Context, cutover string, mv failover.Movement, p *pair) (PairReport, error) {
	pr := PairReport{From: p.from, To: p.to, Slots: p.slots, Keys: p.keys, Checksums: map[string]Digest{}}
	tis, err := m.tableInfos(ctx, p.from, p.to)
	if err != nil {
		return pr, err
	}
	now := m.cfg.Clock.Now()
	e := &Entry{
		ID: entryID(cutover, p.from, p.to, p.slots, p.keys), Cutover: cutover, From: p.from, To: p.to,
		Slots: p.slots, Keys: p.keys, State: StateCopying, StartedAt: now, UpdatedAt: now,
	}
	for _, it := range p.items {
		if it.key == "" && len(it.excl) > 0 {
			if e.Excluded == nil {
				e.Excluded = map[int][]string{}
			}
			e.Excluded[it.slot] = it.excl
		}
	}
	pr.Entry = e.ID
	if err := m.putEntry(ctx, p.to, e); err != nil {
		return pr, err
	}
	src, dst := m.cfg.Cells[p.from], m.cfg.Cells[p.to]
	// seen are the source digests read while copying, per item: the
	// source must still match them when verified.
	seen := make([][]Digest, len(p.items))
	for i, it := range p.items {
		sds, err := m.inPlace(ctx, src, dst, tis, it)
		if err != nil {
			return pr, fmt.Errorf("sqlmove: %s→%s %s: %w", p.from, p.to, it, err)
		}
		if sds != nil {
			seen[i] = sds
			pr.InPlace++
			continue
		}
		n, sds, err := m.copyItem(ctx, cutover, mv, p, tis, it)
		if err != nil {
			return pr, fmt.Errorf("sqlmove: %s→%s %s: %w", p.from, p.to, it, err)
		}
		seen[i] = sds
		pr.Written += n
	}
	if m.hooks.beforeVerify != nil {
		m.hooks.beforeVerify(p.from, p.to)
	}
	// Verify: every item, every table, source against target.
	var mismatches []*MismatchError
	for i, it := range p.items {
		for j, ti := range tis {
			sd, err := digest(ctx, src, ti, it)
			if err != nil {
				return pr, fmt.Errorf("sqlmove: verify %s→%s %s: %s at %s: %w", p.from, p.to, it, ti.Name, p.from, err)
			}
			if sd != seen[i][j] {
				return pr, fmt.Errorf("%w: %s→%s %s table %s: %s while copying, %s now", ErrSourceChanged, p.from, p.to, it, ti.Name, seen[i][j], sd)
			}
			td, err := digest(ctx, dst, ti, it)
			if err != nil {
				return pr, fmt.Errorf("sqlmove: verify %s→%s %s: %s at %s: %w", p.from, p.to, it, ti.Name, p.to, err)
			}
			if sd != td {
				mismatches = append(mismatches, &MismatchError{From: p.from, To: p.to, Table: ti.Name, Slot: it.slot, Key: it.key, Source: sd, Target: td})
			}
			pr.Checksums[ti.Name] = pr.Checksums[ti.Name].Plus(sd)
			pr.Rows += sd.Rows
		}
	}
	if len(mismatches) > 0 {
		first := mismatches[0]
		first.More = len(mismatches) - 1
		m.cfg.Logger.Error("sqlmove: verification failed", "cutover", cutover, "err", first)
		return pr, first
	}
	now = m.cfg.Clock.Now()
	e.State, e.Rows, e.Checksums, e.CopiedAt, e.UpdatedAt = StateCopied, pr.Rows, pr.Checksums, now, now
	if err := m.putEntry(ctx, p.to, e); err != nil {
		return pr, err
	}
	return pr, nil
}

// MismatchError is a failed verification: the target's rows of a table
// in a slot (or of a key) differ from the source's.
type MismatchError struct {
	From, To string
	Table    string
	Slot     int
	Key      string // "" for a slot
	Source   Digest
	Target   Digest
	// More counts the other mismatches found in the same copy.
	More int
}

func (e *MismatchError) Error() string {
	what := "slot " + strconv.Itoa(e.Slot)
	if e.Key != "" {
		what = fmt.Sprintf("key %q", e.Key)
	}
	s := fmt.Sprintf("sqlmove: verify %s→%s: table %s %s: source %s, target %s", e.From, e.To, e.Table, what, e.Source, e.Target)
	if e.More > 0 {
		s += fmt.Sprintf(" (and %d more mismatches)", e.More)
	}
	return s
}

// Unwrap makes a MismatchError match ErrMismatch.
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// inPlace reports whether the target already holds exactly the source's
// rows of item it (a re-run after a crash): if so it returns the source's
// digests per table, else nil.
func (m *Mover) inPlace(ctx context.Context, src, dst DB, tis []tableInfo, it filter) ([]Digest, error) {
	tds := make([]Digest, len(tis))
	empty := true
	for i, ti := range tis {
		d, err := digest(ctx, dst, ti, it)
		if err != nil {
			return nil, err
		}
		tds[i] = d
		empty = empty && d.Rows == 0
	}
	if empty {
		// Most items of a first copy: do not read the source twice; the
		// copy of an empty source item costs a read and commits nothing.
		return nil, nil
	}
	for i, ti := range tis {
		d, err := digest(ctx, src, ti, it)
		if err != nil {
			return nil, err
		}
		if d != tds[i] {
			return nil, nil
		}
	}
	return tds, nil
}

// copyItem replaces the target's rows of it with the source's, in one
// target transaction. It returns how many rows it inserted and the digest
// per table of the source rows it read.
func (m *Mover) copyItem(ctx context.Context, cutover string, mv failover.Movement, p *pair, tis []tableInfo, it filter) (int64, []Digest, error) {
	src, dst := m.cfg.Cells[p.from], m.cfg.Cells[p.to]
	tx, err := dst.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, nil, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	deleted, err := deleteRows(ctx, tx, tis, it)
	if err != nil {
		return 0, nil, err
	}
	var written int64
	seen := make([]Digest, len(tis))
	for i, ti := range tis {
		n, d, err := m.copyTable(ctx, src, tx, ti, it)
		written += n
		seen[i] = d
		if err != nil {
			return written, nil, fmt.Errorf("table %s: %w", ti.Name, err)
		}
	}
	if deleted+written > 0 {
		// Fence: the target holds the locks of what this transaction
		// deleted and inserted (SQLite: the database's write lock) until
		// the commit, so a map that still shows the item frozen at its
		// source now means no cell can have written the item at the
		// target before the commit either. A runner that lost its lock
		// finds the flip here and backs out.
		t, err := m.cfg.Table(ctx)
		if err != nil {
			return 0, nil, fmt.Errorf("read the map before commit: %w", err)
		}
		if err := checkFrozen(t, cutover, p, it, exclusions(t, mv)); err != nil {
			return 0, nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, err
	}
	return written, seen, nil
}

// copyTable streams ti's rows of it from src into tx, in batches of one
// INSERT each. It returns how many it inserted and their digest.
func (m *Mover) copyTable(ctx context.Context, src DB, tx *sql.Tx, ti tableInfo, it filter) (int64, Digest, error) {
	where, args := it.where()
	batch := max(1, min(m.cfg.BatchRows, maxParams/len(ti.cols)))
	var stmt *sql.Stmt
	defer func() {
		if stmt != nil {
			stmt.Close()
		}
	}()
	buf := make([]any, 0, batch*len(ti.cols))
	var n, written int
	flush := func() error {
		if n == 0 {
			return nil
		}
		var err error
		switch {
		case n == batch:
			if stmt == nil {
				if stmt, err = tx.PrepareContext(ctx, insertSQL(ti, batch)); err != nil {
					return fmt.Errorf("prepare insert: %w", err)
				}
			}
			_, err = stmt.ExecContext(ctx, buf...)
		default:
			_, err = tx.ExecContext(ctx, insertSQL(ti, n), buf...)
		}
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		written += n
		if m.hooks.afterBatch != nil {
			m.hooks.afterBatch(it, ti.Name, n)
		}
		buf, n = buf[:0], 0
		return nil
	}
	var d Digest
	h := rowHasher{cols: ti.cols}
	q := "SELECT " + ti.sel + " FROM " + quote(ti.Name) + " WHERE " + where + " ORDER BY " + ti.order
	err := scanRows(ctx, src, q, args, func(vals []any) error {
		if err := h.add(&d, vals); err != nil {
			return err
		}
		buf = append(buf, vals...)
		n++
		if n == batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return int64(written), d, err
}

// ctxErr makes err match ctx's error when ctx has ended: database/sql
// reports a statement of a transaction its context rolled back as
// sql.ErrTxDone, and a driver may report a killed query its own way.
func ctxErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", context.Cause(ctx), err)
}

// plural is "1 slot", "64 slots".
func plural(n int, one string, many ...string) string {
	if n == 1 {
		return "1 " + one
	}
	if len(many) > 0 {
		return commas(int64(n)) + " " + many[0]
	}
	return commas(int64(n)) + " " + one + "s"
}

// commas is 1234567 as "1,234,567".
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
