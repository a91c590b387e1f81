package paycell

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// BankChannel is where the service hands top-ups and withdrawals once they
// are committed. Submit must be idempotent by opID (the service submits an
// operation again if it is still pending later, see ResubmitPending); the
// bank answers later through BankCallback. kind is "topup" or "withdraw";
// amount is in minor units. paycell/bank implements it.
type BankChannel interface {
	Submit(ctx context.Context, opID, kind string, amount int64) error
}

// Config configures a Service. Zero values mean the defaults.
type Config struct {
	// Cell is the ID of the cell the service runs in. Replies carry it, and
	// settlement rows are owned by "cell:<Cell>". Required.
	Cell string
	// SlotCount is the cluster map's slot count; every slot-scoped row
	// stores router.KeySlot(owner, SlotCount). Required: read it from the
	// map (cellsrv does), never guess it.
	SlotCount int
	// DB holds the books; run schema.Migrate on it first. Required. Open
	// it with infra/sqldb: on SQLite the service relies on its one
	// connection and immediate transactions to serialize writes. The
	// caller owns it (the service never closes it).
	DB *sql.DB
	// Dialect is DB's engine (sqldb.SQLite or sqldb.MySQL). Required.
	Dialect sqldb.Dialect
	// Clock stamps rows and mints IDs. Default the real clock.
	Clock clock.Clock
	// IDs mints order, bank operation and transaction IDs (slot-bearing:
	// an order ID routes to its owner's slot). Default a generator over
	// Clock and crypto/rand.
	IDs *router.IDGenerator
	// Bank receives top-ups and withdrawals after they commit. Nil: they
	// stay pending until a callback arrives from elsewhere.
	Bank BankChannel
	// StatementLimit is the number of entries a statement returns when the
	// request names none. Default 50; at most MaxStatementLimit.
	StatementLimit int
	// TxAttempts bounds the attempts of one transaction that the database
	// aborted as a deadlock or lock timeout (MySQL) or found busy
	// (SQLite). Default 5.
	TxAttempts int
	// Logger receives the service's events. Default discards.
	Logger *slog.Logger
}

// MaxStatementLimit is the most entries one statement returns.
const MaxStatementLimit = 500

// DefaultConfig returns the defaults for cell over db.
func DefaultConfig(cell string, slotCount int, db *sql.DB, d sqldb.Dialect) Config {
	c := Config{Cell: cell, SlotCount: slotCount, DB: db, Dialect: d}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.IDs == nil {
		c.IDs = router.NewIDGenerator(c.Clock, nil)
	}
	if c.StatementLimit == 0 {
		c.StatementLimit = 50
	}
	if c.TxAttempts == 0 {
		c.TxAttempts = 5
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Validate checks the fields against each other (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	if err := (router.Cell{ID: c.Cell, IDC: "x", State: router.StateActive}).Check(); err != nil {
		return fmt.Errorf("paycell: cell %q (want 1-63 of A-Z a-z 0-9 . _ -): %w", c.Cell, ErrBadConfig)
	}
	if err := router.CheckSlotCount(c.SlotCount); err != nil {
		return fmt.Errorf("paycell: %v: %w", err, ErrBadConfig)
	}
	if c.DB == nil {
		return fmt.Errorf("paycell: no database: %w", ErrBadConfig)
	}
	if c.Dialect != sqldb.SQLite && c.Dialect != sqldb.MySQL {
		return fmt.Errorf("paycell: dialect %q (want %q or %q): %w", c.Dialect, sqldb.SQLite, sqldb.MySQL, ErrBadConfig)
	}
	if c.StatementLimit < 1 || c.StatementLimit > MaxStatementLimit {
		return fmt.Errorf("paycell: StatementLimit %d (want 1-%d): %w", c.StatementLimit, MaxStatementLimit, ErrBadConfig)
	}
	if c.TxAttempts < 1 {
		return fmt.Errorf("paycell: TxAttempts %d (want at least 1): %w", c.TxAttempts, ErrBadConfig)
	}
	return nil
}
