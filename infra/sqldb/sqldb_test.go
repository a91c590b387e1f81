package sqldb

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  bool
	}{
		{in: "sqlite:/tmp/a1.db", want: "sqlite:/tmp/a1.db"},
		{in: "sqlite:///tmp/a1.db", want: "sqlite:/tmp/a1.db"},
		{in: "sqlite::memory:", want: "sqlite::memory:"},
		{in: "mysql://root@127.0.0.1:3307/cell_a1", want: "mysql://root@127.0.0.1:3307/cell_a1"},
		{in: "mysql://root:secret@127.0.0.1:3307/cell_a1?timeout=2s", want: "mysql://root@127.0.0.1:3307/cell_a1"},
		{in: "sqlite:", err: true},
		{in: "mysql://127.0.0.1:3307", err: true},
		{in: "mysql://root@127.0.0.1:3307/a/b", err: true},
		{in: "mysql://root@127.0.0.1:3307/db?timeout=banana", err: true},
		{in: "postgres://x/y", err: true},
		{in: "", err: true},
	} {
		d, err := ParseDSN(tc.in)
		if tc.err {
			if !errors.Is(err, ErrBadDSN) {
				t.Errorf("ParseDSN(%q) = %v, %v; want ErrBadDSN", tc.in, d, err)
			}
			continue
		}
		if err != nil || d.String() != tc.want {
			t.Errorf("ParseDSN(%q) = %q, %v; want %q", tc.in, d, err, tc.want)
		}
	}
}

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a1.db")
	db, d, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d != SQLite {
		t.Fatalf("dialect %q", d)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.ExecContext(ctx, d.InsertIgnore()+" t (k, v) VALUES ('a', 1)"); err != nil {
			t.Fatal(err)
		}
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows %d, %v", n, err)
	}
}

// FuzzParseDSN: any string gives a DSN or ErrBadDSN, never a panic, and a
// parsed DSN prints as something ParseDSN accepts again.
func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{"sqlite:/tmp/a.db", "sqlite::memory:", "mysql://root@127.0.0.1:3306/pay",
		"mysql://u:p@h:1/d?timeout=1s&readTimeout=2s", "mysql://h/d?x=%zz", "sqlite:", "mysql://", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDSN(s)
		if err != nil {
			if !errors.Is(err, ErrBadDSN) {
				t.Fatalf("ParseDSN(%q): %v is not ErrBadDSN", s, err)
			}
			return
		}
		if d.Dialect == SQLite {
			if _, err := ParseDSN(d.String()); err != nil {
				t.Fatalf("ParseDSN(%q) = %q, which does not parse: %v", s, d, err)
			}
		}
	})
}
