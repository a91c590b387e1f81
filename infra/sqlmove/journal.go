package sqlmove

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// JournalTable is the table, in every cell's database, where the mover
// records the copies that cell received.
const JournalTable = "cellkit_moves"

// State is where a journal entry stands.
type State string

// Journal entry states.
const (
	// StateCopying: the copy started and has not been verified. While its
	// slots and keys are frozen the copy may still be running (or will be
	// re-run); once they are not, the copy was abandoned.
	StateCopying State = "copying"
	// StateCopied: the copy was verified; the source still holds the rows
	// until the flip lands and Prune deletes them.
	StateCopied State = "copied"
	// StatePruned: every slot and key moved away from the source and the
	// source's rows are deleted. Final.
	StatePruned State = "pruned"
	// StateSuperseded: every slot and key is back at the source (the stage
	// was rolled back, or never flipped); nothing is left to prune. Final.
	StateSuperseded State = "superseded"
	// StateAbandoned: the copy never finished and its slots and keys are
	// no longer frozen; the rows it left at the target were deleted. Final.
	StateAbandoned State = "abandoned"
)

// Entry is one journal record: a copy of a movement's slots and keys from
// one cell to another, stored in the target's database.
type Entry struct {
	// ID is derived from the cutover, the cells, the slots and the keys:
	// a re-run of the same copy rewrites the same entry.
	ID      string `json:"id"`
	Cutover string `json:"cutover"`
	From    string `json:"from"`
	To      string `json:"to"`
	// Slots are the slot ranges copied.
	Slots []router.SlotRange `json:"slots,omitempty"`
	// Keys are the whitelisted keys copied.
	Keys []string `json:"keys,omitempty"`
	// Excluded are, per slot, the owner keys the slot's copy left out
	// (pinned by the whitelist, or moving by themselves): the copy did not
	// carry their rows, so pruning the slot keeps them.
	Excluded map[int][]string `json:"excluded,omitempty"`
	// Rows is the number of rows copied (and verified), all tables.
	Rows int64 `json:"rows"`
	// Checksums are per table: the rows copied and their Digest.
	Checksums map[string]Digest `json:"checksums,omitempty"`
	State     State             `json:"state"`
	// PrunedRows counts the rows Prune deleted from the source.
	PrunedRows int64 `json:"prunedRows"`
	// CleanedRows counts rows Prune deleted from the target because the
	// target did not own them (an abandoned or superseded copy).
	CleanedRows int64     `json:"cleanedRows"`
	StartedAt   time.Time `json:"startedAt"`
	CopiedAt    time.Time `json:"copiedAt,omitzero"`
	DoneAt      time.Time `json:"doneAt,omitzero"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// SlotCount is the number of slots the entry copied.
func (e *Entry) SlotCount() int {
	n := 0
	for _, r := range e.Slots {
		n += r.Len()
	}
	return n
}

func entryID(cutover, from, to string, slots []router.SlotRange, keys []string) string {
	h := sha256.New()
	for _, s := range []string{cutover, from, to, router.FormatSlotRanges(slots), strings.Join(keys, "\x00")} {
		h.Write([]byte(s))
		h.Write([]byte{0xff})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func journalDDL(d sqldb.Dialect) string {
	if d == sqldb.MySQL {
		return "CREATE TABLE IF NOT EXISTS " + JournalTable + ` (
	id VARCHAR(64) NOT NULL PRIMARY KEY,
	cutover VARCHAR(128) NOT NULL,
	from_cell VARCHAR(64) NOT NULL,
	to_cell VARCHAR(64) NOT NULL,
	slot_ranges MEDIUMTEXT NOT NULL,
	moved_keys MEDIUMTEXT NOT NULL,
	excluded_keys MEDIUMTEXT NOT NULL,
	row_count BIGINT NOT NULL,
	checksums MEDIUMTEXT NOT NULL,
	state VARCHAR(16) NOT NULL,
	pruned_rows BIGINT NOT NULL,
	cleaned_rows BIGINT NOT NULL,
	started_at BIGINT NOT NULL,
	copied_at BIGINT NOT NULL,
	done_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`
	}
	return "CREATE TABLE IF NOT EXISTS " + JournalTable + ` (
	id TEXT NOT NULL PRIMARY KEY,
	cutover TEXT NOT NULL,
	from_cell TEXT NOT NULL,
	to_cell TEXT NOT NULL,
	slot_ranges TEXT NOT NULL,
	moved_keys TEXT NOT NULL,
	excluded_keys TEXT NOT NULL,
	row_count INTEGER NOT NULL,
	checksums TEXT NOT NULL,
	state TEXT NOT NULL,
	pruned_rows INTEGER NOT NULL,
	cleaned_rows INTEGER NOT NULL,
	started_at INTEGER NOT NULL,
	copied_at INTEGER NOT NULL,
	done_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
)`
}

const journalCols = "id, cutover, from_cell, to_cell, slot_ranges, moved_keys, excluded_keys, row_count, checksums, state, pruned_rows, cleaned_rows, started_at, copied_at, done_at, updated_at"

// ensureJournal creates the journal table in db if it is missing, once
// per Mover and database.
func (m *Mover) ensureJournal(ctx context.Context, cell string) error {
	m.mu.Lock()
	done := m.journals[cell]
	m.mu.Unlock()
	if done {
		return nil
	}
	db := m.cfg.Cells[cell]
	if _, err := db.DB.ExecContext(ctx, journalDDL(db.Dialect)); err != nil {
		return fmt.Errorf("sqlmove: cell %s: create %s: %w", cell, JournalTable, err)
	}
	m.mu.Lock()
	m.journals[cell] = true
	m.mu.Unlock()
	return nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// putEntry writes e to the journal of cell (REPLACE: a re-run of a copy
// rewrites its entry).
func (m *Mover) putEntry(ctx context.Context, cell string, e *Entry) error {
	if err := m.ensureJournal(ctx, cell); err != nil {
		return err
	}
	keys, err := json.Marshal(nonNil(e.Keys))
	if err != nil {
		return err
	}
	sums, err := json.Marshal(e.Checksums)
	if err != nil {
		return err
	}
	excl, err := json.Marshal(e.Excluded)
	if err != nil {
		return err
	}
	db := m.cfg.Cells[cell]
	_, err = db.DB.ExecContext(ctx, db.Dialect.Upsert()+" "+JournalTable+" ("+journalCols+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		e.ID, e.Cutover, e.From, e.To, router.FormatSlotRanges(e.Slots), string(keys), string(excl), e.Rows, string(sums), string(e.State),
		e.PrunedRows, e.CleanedRows, ms(e.StartedAt), ms(e.CopiedAt), ms(e.DoneAt), ms(e.UpdatedAt))
	if err != nil {
		return fmt.Errorf("sqlmove: cell %s: journal entry %s: %w", cell, e.ID, err)
	}
	return nil
}

// updateEntry records Prune's progress on an entry, unless the entry was
// rewritten in the meantime (a new copy of the same movement started).
func (m *Mover) updateEntry(ctx context.Context, cell string, e *Entry, was State) error {
	db := m.cfg.Cells[cell]
	_, err := db.DB.ExecContext(ctx, "UPDATE "+JournalTable+" SET state = ?, pruned_rows = ?, cleaned_rows = ?, done_at = ?, updated_at = ? WHERE id = ? AND state = ? AND started_at = ?",
		string(e.State), e.PrunedRows, e.CleanedRows, ms(e.DoneAt), ms(e.UpdatedAt), e.ID, string(was), ms(e.StartedAt))
	if err != nil {
		return fmt.Errorf("sqlmove: cell %s: journal entry %s: %w", cell, e.ID, err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// entries reads cell's journal; with states given, only entries in one of
// them. Oldest first.
func (m *Mover) entries(ctx context.Context, cell string, states ...State) ([]Entry, error) {
	if err := m.ensureJournal(ctx, cell); err != nil {
		return nil, err
	}
	db := m.cfg.Cells[cell]
	q := "SELECT " + journalCols + " FROM " + JournalTable
	var args []any
	if len(states) > 0 {
		q += " WHERE state IN (" + placeholders(len(states)) + ")"
		for _, s := range states {
			args = append(args, string(s))
		}
	}
	q += " ORDER BY started_at, id"
	rows, err := db.DB.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlmove: cell %s: read %s: %w", cell, JournalTable, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlmove: cell %s: read %s: %w", cell, JournalTable, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlmove: cell %s: read %s: %w", cell, JournalTable, err)
	}
	return out, nil
}

func scanEntry(rows *sql.Rows) (Entry, error) {
	var e Entry
	var slots, keys, excl, sums, state string
	var started, copied, done, updated int64
	if err := rows.Scan(&e.ID, &e.Cutover, &e.From, &e.To, &slots, &keys, &excl, &e.Rows, &sums, &state,
		&e.PrunedRows, &e.CleanedRows, &started, &copied, &done, &updated); err != nil {
		return e, err
	}
	if slots != "" {
		rs, err := router.ParseSlotRanges(slots, router.MaxSlotCount)
		if err != nil {
			return e, fmt.Errorf("entry %s: slots: %w", e.ID, err)
		}
		e.Slots = rs
	}
	if err := json.Unmarshal([]byte(keys), &e.Keys); err != nil {
		return e, fmt.Errorf("entry %s: keys: %w", e.ID, err)
	}
	if len(e.Keys) == 0 {
		e.Keys = nil
	}
	if err := json.Unmarshal([]byte(excl), &e.Excluded); err != nil {
		return e, fmt.Errorf("entry %s: excluded keys: %w", e.ID, err)
	}
	if err := json.Unmarshal([]byte(sums), &e.Checksums); err != nil {
		return e, fmt.Errorf("entry %s: checksums: %w", e.ID, err)
	}
	e.State = State(state)
	e.StartedAt, e.CopiedAt, e.DoneAt, e.UpdatedAt = fromMS(started), fromMS(copied), fromMS(done), fromMS(updated)
	return e, nil
}

// Journal returns every cell's journal entries, by cell and then oldest
// first.
func (m *Mover) Journal(ctx context.Context) ([]Entry, error) {
	var out []Entry
	for _, cell := range sortedKeys(m.cfg.Cells) {
		es, err := m.entries(ctx, cell)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// sortedUnique sorts s and drops repeats, in place.
func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
