package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBadGTID is returned for a GTID position that does not parse.
var ErrBadGTID = errors.New("mysql: bad GTID position")

// GTID is one MariaDB global transaction ID, "domain-server-seq".
type GTID struct {
	Domain uint32
	Server uint32
	Seq    uint64
}

func (g GTID) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

// Pos is a MariaDB GTID position: the last GTID of each replication domain,
// as in @@gtid_binlog_pos or @@gtid_slave_pos ("1-1-5512,2-2-90"), sorted by
// domain. The zero Pos is the empty position.
type Pos []GTID

// ParsePos parses a comma-separated GTID position. It accepts the empty
// string (no transactions yet) and surrounding spaces and newlines (SHOW
// ... STATUS wraps long positions).
func ParsePos(s string) (Pos, error) {
	var p Pos
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		fields := strings.Split(part, "-")
		if len(fields) != 3 {
			return nil, fmt.Errorf("%w %q: %q is not domain-server-seq", ErrBadGTID, s, part)
		}
		d, err1 := strconv.ParseUint(fields[0], 10, 32)
		sv, err2 := strconv.ParseUint(fields[1], 10, 32)
		n, err3 := strconv.ParseUint(fields[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%w %q: %q is not domain-server-seq", ErrBadGTID, s, part)
		}
		g := GTID{Domain: uint32(d), Server: uint32(sv), Seq: n}
		if _, dup := p.Domain(g.Domain); dup {
			return nil, fmt.Errorf("%w %q: domain %d twice", ErrBadGTID, s, g.Domain)
		}
		p = append(p, g)
	}
	slices.SortFunc(p, func(a, b GTID) int { return int(int64(a.Domain) - int64(b.Domain)) })
	return p, nil
}

// String formats p the way MariaDB does ("1-1-5512,2-2-90"); the empty
// position is "".
func (p Pos) String() string {
	parts := make([]string, len(p))
	for i, g := range p {
		parts[i] = g.String()
	}
	return strings.Join(parts, ",")
}

// Domain returns p's GTID in domain d.
func (p Pos) Domain(d uint32) (GTID, bool) {
	for _, g := range p {
		if g.Domain == d {
			return g, true
		}
	}
	return GTID{}, false
}

// Covers reports whether p has reached every domain of q: for each GTID of
// q, p holds a GTID of the same domain with a sequence number at least as
// high. Within a domain MariaDB's sequence numbers only grow (under
// gtid_strict_mode), so this is "p includes q".
func (p Pos) Covers(q Pos) bool {
	for _, g := range q {
		h, ok := p.Domain(g.Domain)
		if !ok || h.Seq < g.Seq {
			return false
		}
	}
	return true
}

// Minus returns the GTIDs of p that q has not reached: the domains where q
// has no GTID or a lower sequence number.
func (p Pos) Minus(q Pos) Pos {
	var out Pos
	for _, g := range p {
		if h, ok := q.Domain(g.Domain); ok && h.Seq >= g.Seq {
			continue
		}
		out = append(out, g)
	}
	return out
}

// Max returns, per domain, the higher of p's and q's GTIDs.
func (p Pos) Max(q Pos) Pos {
	out := slices.Clone(p)
	for _, g := range q {
		i := slices.IndexFunc(out, func(h GTID) bool { return h.Domain == g.Domain })
		switch {
		case i < 0:
			out = append(out, g)
		case out[i].Seq < g.Seq:
			out[i] = g
		}
	}
	slices.SortFunc(out, func(a, b GTID) int { return int(int64(a.Domain) - int64(b.Domain)) })
	return out
}
