package sqlmove

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

func quote(name string) string { return "`" + name + "`" }

// tableInfo is a configured table with the columns both ends have.
type tableInfo struct {
	Table
	cols  []string // sorted: the canonical column order
	sel   string   // the quoted select list, in cols order
	order string   // the quoted primary key, for ORDER BY
}

// columns returns the column names of table at db, sorted.
func columns(ctx context.Context, db DB, table string) ([]string, error) {
	rows, err := db.DB.QueryContext(ctx, "SELECT * FROM "+quote(table)+" WHERE 1 = 0")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.Sort(cols)
	return cols, nil
}

// tableInfos reads the columns of every table at both ends and checks
// they agree and include slot, owner and the key.
func (m *Mover) tableInfos(ctx context.Context, from, to string) ([]tableInfo, error) {
	var out []tableInfo
	for _, t := range m.cfg.Tables {
		src, err := columns(ctx, m.cfg.Cells[from], t.Name)
		if err != nil {
			return nil, fmt.Errorf("sqlmove: cell %s: table %s: %w", from, t.Name, err)
		}
		dst, err := columns(ctx, m.cfg.Cells[to], t.Name)
		if err != nil {
			return nil, fmt.Errorf("sqlmove: cell %s: table %s: %w", to, t.Name, err)
		}
		if !slices.Equal(src, dst) {
			return nil, fmt.Errorf("sqlmove: table %s: columns at %s %v, at %s %v: %w", t.Name, from, src, to, dst, ErrSchema)
		}
		for _, c := range src {
			if !identRe.MatchString(c) {
				return nil, fmt.Errorf("sqlmove: table %s: column %q is not a plain SQL identifier: %w", t.Name, c, ErrSchema)
			}
		}
		for _, c := range append([]string{"slot", "owner"}, t.Key...) {
			if !slices.Contains(src, c) {
				return nil, fmt.Errorf("sqlmove: table %s has no column %s: %w", t.Name, c, ErrSchema)
			}
		}
		q := make([]string, len(src))
		for i, c := range src {
			q[i] = quote(c)
		}
		k := make([]string, len(t.Key))
		for i, c := range t.Key {
			k[i] = quote(c)
		}
		out = append(out, tableInfo{Table: t, cols: src, sel: strings.Join(q, ", "), order: strings.Join(k, ", ")})
	}
	return out, nil
}

// filter selects the rows of one slot (but the excluded owner keys) or of
// one owner key.
type filter struct {
	slot int
	key  string   // a key item: owner = key
	excl []string // a slot item: owners left out, sorted
}

func (f filter) where() (string, []any) {
	if f.key != "" {
		return "`slot` = ? AND `owner` = ?", []any{f.slot, f.key}
	}
	if len(f.excl) == 0 {
		return "`slot` = ?", []any{f.slot}
	}
	args := make([]any, 0, 1+len(f.excl))
	args = append(args, f.slot)
	for _, k := range f.excl {
		args = append(args, k)
	}
	return "`slot` = ? AND `owner` NOT IN (" + placeholders(len(f.excl)) + ")", args
}

// scanRows runs q at db and calls fn with each row, normalized. vals is
// reused between calls.
func scanRows(ctx context.Context, db DB, q string, args []any, fn func(vals []any) error) error {
	rows, err := db.DB.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	types := make([]string, len(cts))
	for i, ct := range cts {
		types[i] = ct.DatabaseTypeName()
	}
	raw := make([]any, len(cts))
	ptrs := make([]any, len(cts))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	vals := make([]any, len(cts))
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i, v := range raw {
			if vals[i], err = normalize(db.Dialect, types[i], v); err != nil {
				return err
			}
		}
		if err := fn(vals); err != nil {
			return err
		}
	}
	return rows.Err()
}

// rowHasher hashes canonical row encodings, reusing its buffer.
type rowHasher struct {
	cols []string
	buf  []byte
}

func (h *rowHasher) add(d *Digest, vals []any) error {
	var err error
	h.buf, err = encodeRow(h.buf[:0], h.cols, vals)
	if err != nil {
		return err
	}
	d.addRow(sha256.Sum256(h.buf))
	return nil
}

// digest sums the rows of ti that f selects at db.
func digest(ctx context.Context, db DB, ti tableInfo, f filter) (Digest, error) {
	where, args := f.where()
	var d Digest
	h := rowHasher{cols: ti.cols}
	err := scanRows(ctx, db, "SELECT "+ti.sel+" FROM "+quote(ti.Name)+" WHERE "+where, args, func(vals []any) error {
		return h.add(&d, vals)
	})
	return d, err
}

// deleteRows deletes the rows of every table f selects, in tx, and
// returns how many it deleted.
func deleteRows(ctx context.Context, tx *sql.Tx, tis []tableInfo, f filter) (int64, error) {
	where, args := f.where()
	var n int64
	for _, ti := range tis {
		res, err := tx.ExecContext(ctx, "DELETE FROM "+quote(ti.Name)+" WHERE "+where, args...)
		if err != nil {
			return n, fmt.Errorf("table %s: delete: %w", ti.Name, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return n, fmt.Errorf("table %s: delete: %w", ti.Name, err)
		}
		n += k
	}
	return n, nil
}

func insertSQL(ti tableInfo, rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(quote(ti.Name))
	b.WriteString(" (")
	b.WriteString(ti.sel)
	b.WriteString(") VALUES ")
	row := "(" + placeholders(len(ti.cols)) + ")"
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}
