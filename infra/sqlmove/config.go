package sqlmove

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// Errors. Match them with errors.Is; a failed verification is a
// *MismatchError (errors.As), which also matches ErrMismatch.
var (
	// ErrBadConfig: the configuration is invalid.
	ErrBadConfig = errors.New("bad sqlmove configuration")
	// ErrBadMovement: the movement names a cell without a database, moves
	// a cell onto itself, or names a slot or key twice.
	ErrBadMovement = errors.New("sqlmove: bad movement")
	// ErrNotFrozen: a slot or key of the movement is not frozen by the
	// cutover, or not owned by the movement's source. Copying it could
	// race a live writer, so the mover refuses.
	ErrNotFrozen = errors.New("sqlmove: not frozen by the cutover at its source")
	// ErrMapChanged: the map changed under a copy or a prune (the pins of
	// a slot, or who owns it); the transaction was rolled back.
	ErrMapChanged = errors.New("sqlmove: the map changed under the mover")
	// ErrSchema: a table lacks a needed column, or its columns differ
	// between source and target.
	ErrSchema = errors.New("sqlmove: schema mismatch")
	// ErrMismatch: source and target disagree after a copy.
	ErrMismatch = errors.New("sqlmove: verification failed")
	// ErrSourceChanged: the source's rows changed while they were being
	// copied, which a frozen slot must not allow: a writer ignored the
	// freeze. The copy is refused.
	ErrSourceChanged = errors.New("sqlmove: the source changed during the copy (a write got past the freeze)")
	// ErrUnsupportedValue: a column value of a Go type the canonical
	// encoding does not know.
	ErrUnsupportedValue = errors.New("sqlmove: unsupported column value")
)

// Table is a slot-scoped table: every row has the columns slot (INTEGER,
// the router.KeySlot of owner) and owner (the owner key), and moves with
// its owner. Rows with slot -1 are cell-scoped and never move.
type Table struct {
	// Name is the table's name, a plain SQL identifier.
	Name string
	// Key are the primary-key columns, in key order.
	Key []string
}

// DB is one cell's database.
type DB struct {
	DB      *sql.DB
	Dialect sqldb.Dialect
}

// Config configures a Mover. The zero value of every optional field means
// its default.
type Config struct {
	// Cells maps a cell ID to its database. Every cell a movement names
	// must be here. Required; no two cells may share a *sql.DB.
	Cells map[string]DB
	// Tables are the slot-scoped tables to move, copied in this order.
	// Required.
	Tables []Table
	// Table returns the current map. Required. The mover reads it before
	// a copy (which keys the whitelist pins, which slots are frozen) and
	// again inside every transaction that writes copied rows or prunes,
	// so that a runner which lost its lock, or a map edited by hand, never
	// makes it delete rows a cell owns; it should therefore be a fresh,
	// linearizable read (etcdstore's Load, etcdcutover's Control.Table),
	// not a watcher's cached table.
	Table func(ctx context.Context) (*router.Table, error)
	// BatchRows is how many rows one INSERT statement carries. Default
	// 500. It is lowered for wide tables to stay under the engines'
	// statement parameter limits.
	BatchRows int
	// Clock stamps the journal and times copies. Default the real clock.
	Clock clock.Clock
	// Logger receives one line per copy and prune. Default slog.Default().
	Logger *slog.Logger
}

// DefaultBatchRows is the default of Config.BatchRows.
const DefaultBatchRows = 500

// maxParams bounds the placeholders of one statement: SQLite allows
// 32766, MySQL 65535.
const maxParams = 30000

// DefaultConfig returns a Config with the defaults filled in; Cells,
// Tables and Table are still to be set.
func DefaultConfig() Config {
	return Config{BatchRows: DefaultBatchRows, Clock: clock.Real(), Logger: slog.Default()}
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Validate checks the fields and how they fit together.
func (c Config) Validate() error {
	if len(c.Cells) == 0 {
		return fmt.Errorf("sqlmove: no cells: %w", ErrBadConfig)
	}
	seen := map[*sql.DB]string{}
	for _, id := range sortedKeys(c.Cells) {
		db := c.Cells[id]
		if err := (router.Cell{ID: id, IDC: "x", State: router.StateActive}).Check(); err != nil {
			return fmt.Errorf("sqlmove: cell %q: %v: %w", id, err, ErrBadConfig)
		}
		if db.DB == nil {
			return fmt.Errorf("sqlmove: cell %s: nil *sql.DB: %w", id, ErrBadConfig)
		}
		if db.Dialect != sqldb.SQLite && db.Dialect != sqldb.MySQL {
			return fmt.Errorf("sqlmove: cell %s: dialect %q (want %q or %q): %w", id, db.Dialect, sqldb.SQLite, sqldb.MySQL, ErrBadConfig)
		}
		if other, ok := seen[db.DB]; ok {
			return fmt.Errorf("sqlmove: cells %s and %s share one database; each cell needs its own: %w", other, id, ErrBadConfig)
		}
		seen[db.DB] = id
	}
	if len(c.Tables) == 0 {
		return fmt.Errorf("sqlmove: no tables: %w", ErrBadConfig)
	}
	names := map[string]bool{}
	for _, t := range c.Tables {
		if !identRe.MatchString(t.Name) {
			return fmt.Errorf("sqlmove: table name %q (want a plain SQL identifier): %w", t.Name, ErrBadConfig)
		}
		if t.Name == JournalTable {
			return fmt.Errorf("sqlmove: table %s is the mover's journal: %w", t.Name, ErrBadConfig)
		}
		if names[t.Name] {
			return fmt.Errorf("sqlmove: table %s listed twice: %w", t.Name, ErrBadConfig)
		}
		names[t.Name] = true
		if len(t.Key) == 0 {
			return fmt.Errorf("sqlmove: table %s: no primary-key columns: %w", t.Name, ErrBadConfig)
		}
		for i, k := range t.Key {
			if !identRe.MatchString(k) {
				return fmt.Errorf("sqlmove: table %s: key column %q (want a plain SQL identifier): %w", t.Name, k, ErrBadConfig)
			}
			if slices.Contains(t.Key[:i], k) {
				return fmt.Errorf("sqlmove: table %s: key column %s listed twice: %w", t.Name, k, ErrBadConfig)
			}
		}
	}
	if c.Table == nil {
		return fmt.Errorf("sqlmove: no Table func (the mover reads the map's pins and freezes): %w", ErrBadConfig)
	}
	if c.BatchRows < 0 {
		return fmt.Errorf("sqlmove: BatchRows %d: want > 0 (0 means %d): %w", c.BatchRows, DefaultBatchRows, ErrBadConfig)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.BatchRows == 0 {
		c.BatchRows = DefaultBatchRows
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
