package sqlmove

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cellkit/cellkit/infra/sqldb"
)

// Digest sums a set of rows: their count, and the sum (lane-wise, mod
// 2^64) of the SHA-256 of each row's canonical encoding.
//
// The sum does not depend on the order rows are read in, so the two
// engines agree even where their collations sort text keys differently;
// since primary keys are unique it is a digest of the set of rows,
// ordered by key. Digests of disjoint sets add up (Plus), which gives a
// table's checksum over all the slots of a move from the per-slot ones.
type Digest struct {
	Rows int64
	Sum  [4]uint64
}

// Plus returns the digest of the union of two disjoint row sets.
func (d Digest) Plus(o Digest) Digest {
	d.Rows += o.Rows
	for i := range d.Sum {
		d.Sum[i] += o.Sum[i]
	}
	return d
}

func (d *Digest) addRow(h [sha256.Size]byte) {
	d.Rows++
	for i := range d.Sum {
		d.Sum[i] += binary.BigEndian.Uint64(h[8*i:])
	}
}

// Hex is the sum in hex (64 digits).
func (d Digest) Hex() string {
	var b [32]byte
	for i, v := range d.Sum {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	return hex.EncodeToString(b[:])
}

// String is "12 rows, sum 0123456789abcdef" (the first 16 hex digits).
func (d Digest) String() string { return fmt.Sprintf("%d rows, sum %s", d.Rows, d.Hex()[:16]) }

type digestJSON struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"sum"`
}

// MarshalJSON writes {"rows": N, "sum": "hex"}.
func (d Digest) MarshalJSON() ([]byte, error) {
	return json.Marshal(digestJSON{Rows: d.Rows, Sum: d.Hex()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (d *Digest) UnmarshalJSON(b []byte) error {
	var j digestJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	raw, err := hex.DecodeString(j.Sum)
	if err != nil || len(raw) != 32 {
		return fmt.Errorf("sqlmove: digest sum %q: want 64 hex digits", j.Sum)
	}
	d.Rows = j.Rows
	for i := range d.Sum {
		d.Sum[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	return nil
}

// Canonical encoding tags, one byte before each value.
const (
	tagNull   = 'N'
	tagInt    = 'I' // int64, 8 bytes big-endian
	tagUint   = 'U' // uint64 above MaxInt64, 8 bytes
	tagFloat  = 'F' // IEEE 754 bits, 8 bytes
	tagText   = 'S' // uvarint length, bytes
	tagBytes  = 'B' // uvarint length, bytes
	tagTime   = 'T' // RFC 3339 with nanoseconds, UTC, as text
	tagColumn = 'C' // uvarint length, column name
)

// encodeRow appends the canonical encoding of a row (values already
// normalized, columns in sorted name order) to buf.
func encodeRow(buf []byte, cols []string, vals []any) ([]byte, error) {
	for i, v := range vals {
		buf = append(buf, tagColumn)
		buf = binary.AppendUvarint(buf, uint64(len(cols[i])))
		buf = append(buf, cols[i]...)
		switch x := v.(type) {
		case nil:
			buf = append(buf, tagNull)
		case int64:
			buf = append(buf, tagInt)
			buf = binary.BigEndian.AppendUint64(buf, uint64(x))
		case uint64:
			buf = append(buf, tagUint)
			buf = binary.BigEndian.AppendUint64(buf, x)
		case float64:
			buf = append(buf, tagFloat)
			buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(x))
		case string:
			buf = append(buf, tagText)
			buf = binary.AppendUvarint(buf, uint64(len(x)))
			buf = append(buf, x...)
		case []byte:
			buf = append(buf, tagBytes)
			buf = binary.AppendUvarint(buf, uint64(len(x)))
			buf = append(buf, x...)
		case time.Time:
			s := x.UTC().Format(time.RFC3339Nano)
			buf = append(buf, tagTime)
			buf = binary.AppendUvarint(buf, uint64(len(s)))
			buf = append(buf, s...)
		default:
			return buf, fmt.Errorf("%w: column %s holds %T", ErrUnsupportedValue, cols[i], v)
		}
	}
	return buf, nil
}

// normalize turns a value scanned into *any into the one Go value both
// engines agree on for it, which is also what is written to the target:
// integers as int64, floats as float64, text as string, bytes as []byte
// (never nil: an empty BLOB read back as a nil slice would be written as
// NULL), times in UTC. MySQL reports text and numbers as []byte in some
// protocols; dbType (the driver's DatabaseTypeName) says what they are.
func normalize(d sqldb.Dialect, dbType string, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
		return x, nil
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), nil
		}
		return uint64(x), nil
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case string:
		return x, nil
	case time.Time:
		return x.UTC(), nil
	case []byte:
		if d == sqldb.MySQL {
			return normalizeMySQLBytes(dbType, x)
		}
		if x == nil {
			return []byte{}, nil
		}
		return x, nil
	}
	return nil, fmt.Errorf("%w: %T (database type %s)", ErrUnsupportedValue, v, dbType)
}

func normalizeMySQLBytes(dbType string, b []byte) (any, error) {
	t := strings.ToUpper(dbType)
	switch {
	case strings.Contains(t, "INT"): // TINYINT ... BIGINT, UNSIGNED too
		if strings.HasPrefix(t, "UNSIGNED") {
			u, err := strconv.ParseUint(string(b), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: %s %q: %v", ErrUnsupportedValue, dbType, b, err)
			}
			return normalize(sqldb.MySQL, dbType, u)
		}
		i, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrUnsupportedValue, dbType, b, err)
		}
		return i, nil
	case t == "FLOAT" || t == "DOUBLE":
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrUnsupportedValue, dbType, b, err)
		}
		return f, nil
	case t == "YEAR":
		i, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrUnsupportedValue, dbType, b, err)
		}
		return i, nil
	case strings.Contains(t, "BINARY") || strings.Contains(t, "BLOB") || t == "BIT" || t == "GEOMETRY" || t == "VECTOR":
		if b == nil {
			return []byte{}, nil
		}
		return b, nil
	}
	// CHAR, VARCHAR, *TEXT, JSON, ENUM, SET, DECIMAL, DATE, TIME, ... as text.
	return string(b), nil
}
