package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // registers "sqlite"
)

// Dialect names a SQL engine.
type Dialect string

// Engines.
const (
	SQLite Dialect = "sqlite"
	MySQL  Dialect = "mysql"
)

// ErrBadDSN is returned for a DSN Open cannot use.
var ErrBadDSN = errors.New("sqldb: bad DSN")

// DSN is a parsed data source name.
type DSN struct {
	Dialect Dialect
	// Path is the SQLite file (or ":memory:").
	Path string
	// MySQL is the driver configuration for MySQL/MariaDB.
	MySQL *mysql.Config
}

// String returns the DSN without a password.
func (d DSN) String() string {
	switch d.Dialect {
	case SQLite:
		return "sqlite:" + d.Path
	case MySQL:
		u := url.URL{Scheme: "mysql", User: url.User(d.MySQL.User), Host: d.MySQL.Addr, Path: "/" + d.MySQL.DBName}
		return u.String()
	}
	return string(d.Dialect)
}

// ParseDSN parses "sqlite:PATH" or "mysql://USER[:PASS]@HOST:PORT/DB[?k=v]".
// Query parameters of a mysql DSN are passed to the driver
// (go-sql-driver/mysql's DSN parameters, e.g. timeout=5s).
func ParseDSN(s string) (DSN, error) {
	switch {
	case strings.HasPrefix(s, "sqlite:"):
		p := strings.TrimPrefix(s, "sqlite:")
		p = strings.TrimPrefix(p, "//")
		if p == "" {
			return DSN{}, fmt.Errorf("%w %q: sqlite needs a path (sqlite:/var/lib/cell/a1.db)", ErrBadDSN, s)
		}
		return DSN{Dialect: SQLite, Path: p}, nil
	case strings.HasPrefix(s, "mysql://"):
		u, err := url.Parse(s)
		if err != nil {
			return DSN{}, fmt.Errorf("%w %q: %v", ErrBadDSN, s, err)
		}
		db := strings.TrimPrefix(u.Path, "/")
		if u.Host == "" || db == "" || strings.Contains(db, "/") {
			return DSN{}, fmt.Errorf("%w %q: want mysql://USER[:PASS]@HOST:PORT/DB", ErrBadDSN, s)
		}
		cfg := mysql.NewConfig()
		cfg.Net = "tcp"
		cfg.Addr = u.Host
		cfg.DBName = db
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
		cfg.ParseTime = true
		cfg.Timeout = 5 * time.Second
		// REPEATABLE READ is the default of both engines; it is not set here
		// because MariaDB before 11.1 calls the variable tx_isolation.
		cfg.Params = map[string]string{}
		// Fewer round trips per statement: placeholders are interpolated
		// by the driver (safely escaped), not prepared on the server.
		cfg.InterpolateParams = true
		if u.RawQuery != "" {
			// Let the driver parse its own parameters.
			extra, err := mysql.ParseDSN("/x?" + u.RawQuery)
			if err != nil {
				return DSN{}, fmt.Errorf("%w %q: %v", ErrBadDSN, s, err)
			}
			if extra.Timeout != 0 {
				cfg.Timeout = extra.Timeout
			}
			if extra.ReadTimeout != 0 {
				cfg.ReadTimeout = extra.ReadTimeout
			}
			if extra.WriteTimeout != 0 {
				cfg.WriteTimeout = extra.WriteTimeout
			}
			for k, v := range extra.Params {
				cfg.Params[k] = v
			}
		}
		return DSN{Dialect: MySQL, MySQL: cfg}, nil
	}
	return DSN{}, fmt.Errorf("%w %q: want sqlite:PATH or mysql://USER@HOST:PORT/DB", ErrBadDSN, s)
}

// Open parses dsn, opens the database and checks it answers.
func Open(ctx context.Context, dsn string) (*sql.DB, Dialect, error) {
	d, err := ParseDSN(dsn)
	if err != nil {
		return nil, "", err
	}
	db, err := OpenDSN(ctx, d)
	return db, d.Dialect, err
}

// OpenDSN opens a parsed DSN and checks it answers.
func OpenDSN(ctx context.Context, d DSN) (*sql.DB, error) {
	var db *sql.DB
	var err error
	switch d.Dialect {
	case SQLite:
		// _txlock=immediate takes the write lock at BEGIN, so concurrent
		// writers wait on busy_timeout instead of failing mid-transaction.
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(ON)")
		q.Set("_txlock", "immediate")
		path := d.Path
		if path == ":memory:" {
			path = "file::memory:"
		} else {
			path = "file:" + path
		}
		db, err = sql.Open("sqlite", path+"?"+q.Encode())
		if err == nil {
			// SQLite has one writer; one connection also keeps an
			// in-memory database alive and shared.
			db.SetMaxOpenConns(1)
		}
	case MySQL:
		var c driver.Connector
		c, err = mysql.NewConnector(d.MySQL)
		if err == nil {
			db = sql.OpenDB(c)
			db.SetMaxOpenConns(32)
			db.SetMaxIdleConns(32)
			db.SetConnMaxLifetime(5 * time.Minute)
		}
	default:
		return nil, fmt.Errorf("%w: unknown dialect %q", ErrBadDSN, d.Dialect)
	}
	if err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", d, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqldb: open %s: %w", d, err)
	}
	return db, nil
}

// InsertIgnore returns the statement prefix that inserts a row unless its
// key exists: "INSERT OR IGNORE INTO" or "INSERT IGNORE INTO".
func (d Dialect) InsertIgnore() string {
	if d == MySQL {
		return "INSERT IGNORE INTO"
	}
	return "INSERT OR IGNORE INTO"
}

// Upsert returns the statement prefix that inserts a row or replaces the row
// with its key: "REPLACE INTO" on both engines.
func (d Dialect) Upsert() string { return "REPLACE INTO" }

// Text returns a column type for a key-sized string (indexable on MySQL).
func (d Dialect) Text(n int) string {
	if d == MySQL {
		return fmt.Sprintf("VARCHAR(%d)", n)
	}
	return "TEXT"
}
