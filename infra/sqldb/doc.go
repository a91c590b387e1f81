// Package sqldb opens the SQL databases that cells keep their books in,
// from one DSN form for both engines cellkit supports:
//
//	sqlite:PATH                      a SQLite file (modernc.org/sqlite, pure Go)
//	sqlite::memory:                  a private in-memory SQLite database
//	mysql://USER[:PASS]@HOST:PORT/DB[?PARAMS]  MariaDB or MySQL (go-sql-driver/mysql)
//
// Open applies the settings each engine needs for payment books: SQLite in
// WAL mode with a busy timeout and immediate write transactions (so two
// writers queue instead of failing with SQLITE_BUSY mid-transaction), one
// connection for writes; MySQL with parseTime, interpolated parameters and
// multiStatements off. Dialect carries the few statements that differ.
package sqldb
