// Package schema is the SQL schema of paycell's books: versioned
// migrations for SQLite and MySQL/MariaDB, and the list of slot-scoped
// tables (with their primary keys) that data movers copy by slot and owner.
//
// Every slot-scoped row carries `slot` (router.KeySlot of its owner under the
// cluster's slot count) and `owner` (the user key), both indexed, so a mover
// can select a stage's rows by slot range or by whitelisted key without
// knowing what the tables mean:
//
//	accounts(owner PK, slot, balance, opened_at, updated_at)
//	orders(order_id PK, slot, owner, merchant, amount, refunded, status, created_at, updated_at)
//	txns(txn_id PK, slot, owner, kind, ref, request_id, at)
//	entries(txn_id, leg, slot, owner, account, amount, settled_by, PK(txn_id, leg))
//	bank_ops(op_id PK, slot, owner, kind, amount, status, bank_ref, created_at, done_at)
//	requests(owner, request_id, slot, method, result, at, PK(owner, request_id))
//
// Cell-scoped rows are never moved: settlement transactions sit in txns and
// entries with slot -1 and owner "cell:<cell>", and settlements(batch_id PK,
// cell, merchant, amount, legs, at) lists the batches. Money is int64 minor
// units; timestamps are Unix milliseconds.
//
// Migrate applies the migrations a database lacks and records them in
// schema_migrations. It is idempotent and safe to run from two instances at
// once: on SQLite the migration runs in one immediate (write-locked)
// transaction; on MySQL it holds the named lock GET_LOCK("cellkit.paycell.schema")
// and its DDL says IF NOT EXISTS.
//
// The package depends on database/sql and infra/sqldb only, so data movers
// and tools can use it without importing the service.
package schema
