// Package sqlmove is the "copy" data mover of cutovers: it moves the rows
// of slot-scoped tables between cells' SQL databases (SQLite or
// MariaDB/MySQL, through database/sql), verifies them, and deletes them
// from the source once the flip has landed. It implements failover.DataMover
// (Name "copy") and failover.Pruner. It knows no schema: the tables are
// configuration (Table: a name and primary-key columns); every row of them
// has the columns slot (the router.KeySlot of its owner) and owner (the
// owner key). Rows with slot -1 are cell-scoped and never move.
//
// # Copy (the data gate)
//
// WaitData runs while the stage's slots and keys are frozen at their
// sources and the barrier has passed, so nothing writes them anywhere; it
// checks that against the map and refuses otherwise (ErrNotFrozen). For
// each source→target pair:
//
//  1. record the copy in the target's journal (JournalTable) as copying;
//  2. for each slot, in one target transaction: delete the target's rows
//     of the slot, then insert the source's, in batches (Config.BatchRows
//     rows per INSERT). Owner keys the whitelist pins, wherever to, are
//     left out on both sides: a pin overrides its slot, so their rows at
//     the target may be the live rows of a key pinned there, and their rows
//     at the source are not the source's to give. Each key the movement
//     moves by itself is handled the same way, by owner. A slot or key the
//     target already holds, by digest, is skipped: a re-run after a crash
//     resumes where the last one stopped, and a re-run after success
//     writes nothing;
//  3. verify every slot and key of every table, source against target: row
//     count and Digest must match, else a *MismatchError (ErrMismatch) and
//     the stage does not flip. A source that changed since it was copied
//     (a write got past the freeze) fails with ErrSourceChanged;
//  4. record the copy as copied, with the rows and per-table checksums.
//
// Every transaction is all or nothing and every step is repeatable, so a
// crash anywhere leaves a state a re-run finishes.
//
// The Digest of a set of rows is the count and the sum of the SHA-256 of
// each row's canonical encoding (every column, by name, with a type tag:
// NULL, integer, float, text, bytes, time). Values are normalized first, so
// SQLite and MariaDB agree (MySQL reports text as bytes; SQLite reads an
// empty BLOB as a nil slice) and cells on different engines can move rows
// between them. The sum does not depend on the order rows are read in, so
// collations that sort keys differently do not matter either; rows are
// still copied in primary-key order.
//
// # Prune
//
// The sources keep the copied rows until the flip; the runner calls Prune
// after every flip it applies and whenever it starts, holds or ends. Prune
// reads every cell's journal. For a copied entry it deletes, from the
// source, the rows of each of its slots and keys that the map now gives
// to another cell and that is not frozen, keeping the owner keys pinned to
// the source and frozen keys. The entry becomes pruned when all have left
// the source, superseded when all are back at the source (a rolled-back
// stage: the rows there are live again), and otherwise stays copied for a
// later call. A copying entry whose slots are no longer frozen was
// abandoned (the stage was unfrozen without a flip). In every case the
// target's rows of slots and keys it does not own are removed too, so an
// abandoned or rolled-back copy leaves nothing behind.
//
// # The single writer
//
// A cell's rows of a slot or key the map gives to another cell, outside a
// move, are never live (the owner has the live ones: every change of owner
// went through a verified copy), and they are the only rows Prune deletes.
// A copy deletes at the target only rows of a slot the map shows frozen at
// the source. Both re-read the map (Config.Table) inside each transaction
// that deletes or writes, after taking the rows' locks and before
// committing: a runner that lost its lock while another finished the stage
// (a zombie) finds the change there and rolls back instead of deleting
// rows the new owner wrote, or rows a later copy brought back. This is
// only as fresh as Config.Table: use a linearizable read.
//
// Tables need indexes on slot and on owner: every statement selects by
// them.
//
//	mover, err := sqlmove.New(sqlmove.Config{
//		Cells:  map[string]sqlmove.DB{"a1": {DB: dbA, Dialect: sqldb.SQLite}, "b1": {DB: dbB, Dialect: sqldb.SQLite}},
//		Tables: []sqlmove.Table{{Name: "accounts", Key: []string{"owner"}}, {Name: "orders", Key: []string{"order_id"}}},
//		Table:  func(ctx context.Context) (*router.Table, error) { t, _, err := store.Load(ctx); return t, err },
//	})
//	runner := failover.Runner{Control: ctl, Mover: mover}
package sqlmove
