package books

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/lab/load"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// Database is one database holding cells' books.
type Database struct {
	// Name names it in reports ("a1", "idc-a").
	Name string
	DB   *sql.DB
	// Cells are the cells whose books it holds.
	Cells []string
}

// Input is what Check reads.
type Input struct {
	Databases []Database
	// Replicated says the databases replicate to each other (mysql-gtid):
	// every row is expected in every database, and the "nowhere else" and
	// "left behind" checks become "the same everywhere".
	Replicated bool
	// Table is the map at the end of the run.
	Table *router.Table
	// Acks are the load generator's acknowledged writes.
	Acks []load.Ack
	// BankIn and BankOut are what the virtual bank confirmed taking in
	// (top-ups) and paying out (withdrawals), in cents.
	BankIn, BankOut int64
	// Admissions are the guards' records; nil skips the slot check.
	Admissions []admission.Record
	// Pinned are keys the whitelist pinned at any time during the run:
	// their writes are checked by key, not by slot.
	Pinned []string
}

// Invariant is one checked property.
type Invariant struct {
	Name       string   `json:"name"`
	OK         bool     `json:"ok"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations,omitempty"` // the first few
	Count      int      `json:"count"`                // all violations
}

// Report is the result of Check.
type Report struct {
	Invariants []Invariant `json:"invariants"`
	// Totals over the books, in cents.
	Users    int64 `json:"users"`
	Pending  int64 `json:"merchantPending"`
	Settled  int64 `json:"merchantSettled"`
	InFlight int64 `json:"withdrawalsInFlight"`
	BankIn   int64 `json:"bankIn"`
	BankOut  int64 `json:"bankOut"`
	Payments int   `json:"paymentsChecked"`
	Rows     int   `json:"rows"`
	// Missing are the acknowledged writes found in no cell's books: every
	// one (the RPO of a drill names them).
	Missing    []load.Ack `json:"missing,omitempty"`
	CheckedFor time.Duration
}

// OK reports whether every invariant holds.
func (r Report) OK() bool {
	for _, i := range r.Invariants {
		if !i.OK {
			return false
		}
	}
	return len(r.Invariants) > 0
}

// Failed returns the invariants that do not hold.
func (r Report) Failed() []Invariant {
	var out []Invariant
	for _, i := range r.Invariants {
		if !i.OK {
			out = append(out, i)
		}
	}
	return out
}

const maxShown = 5

func newInv(name string) *Invariant { return &Invariant{Name: name, OK: true} }

func (i *Invariant) violate(format string, args ...any) {
	i.OK = false
	i.Count++
	if len(i.Violations) < maxShown {
		i.Violations = append(i.Violations, fmt.Sprintf(format, args...))
	}
}

// txnRow is one transaction as the books hold it.
type txnRow struct {
	db        string
	id        string
	owner     string
	kind      string
	ref       string
	requestID string
}

// Check reads the books and checks every invariant.
func Check(ctx context.Context, in Input) (Report, error) {
	start := time.Now()
	var rep Report
	if len(in.Databases) == 0 || in.Table == nil {
		return rep, fmt.Errorf("books: need databases and the map")
	}
	rep.BankIn, rep.BankOut = in.BankIn, in.BankOut
	dbOf := map[string]string{} // cell -> database name
	for _, d := range in.Databases {
		for _, c := range d.Cells {
			dbOf[c] = d.Name
		}
	}
	owner := func(key string) string {
		if c := in.Table.Lookup(key).Cell; c != nil {
			return c.ID
		}
		return ""
	}

	// Read every database's transactions, indexed by request ID.
	byReq := map[string][]txnRow{}
	payOfOrder := map[string][]txnRow{}
	ledger := newInv("the ledger balances (every transaction sums to zero; balances are the sum of their legs)")
	leftBehind := newInv("no rows are left at a cell that does not own them")
	sums := map[string]paycell.Books{} // db -> its books
	for _, d := range in.Databases {
		rows, err := d.DB.QueryContext(ctx, "SELECT txn_id, owner, kind, COALESCE(ref, ''), COALESCE(request_id, '') FROM txns")
		if err != nil {
			return rep, fmt.Errorf("books: %s: read txns: %w", d.Name, err)
		}
		for rows.Next() {
			t := txnRow{db: d.Name}
			if err := rows.Scan(&t.id, &t.owner, &t.kind, &t.ref, &t.requestID); err != nil {
				rows.Close()
				return rep, fmt.Errorf("books: %s: %w", d.Name, err)
			}
			if t.requestID != "" {
				byReq[t.requestID] = append(byReq[t.requestID], t)
			}
			if t.kind == "pay" {
				payOfOrder[t.ref] = append(payOfOrder[t.ref], t)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return rep, err
		}

		// Every transaction balanced, balances the sum of their legs, every
		// row in its owner's slot: paycell's own per-database checks.
		b, err := paycell.ReadBooks(ctx, d.DB, in.Table.SlotCount())
		if err != nil {
			return rep, fmt.Errorf("books: %s: %w", d.Name, err)
		}
		for _, p := range b.Problems {
			ledger.violate("%s: %s", d.Name, p)
		}
		sums[d.Name] = b

		// Rows at a cell that does not own them.
		if !in.Replicated {
			for _, st := range schema.SlotTables {
				tbl := st.Name
				owners, err := queryPairs(ctx, d.DB, "SELECT owner, COUNT(*) FROM "+tbl+" WHERE slot >= 0 GROUP BY owner")
				if err != nil {
					return rep, fmt.Errorf("books: %s: %s: %w", d.Name, tbl, err)
				}
				for _, p := range owners {
					rep.Rows += int(p.v)
					if !slices.Contains(d.Cells, owner(p.k)) {
						leftBehind.violate("%s: %d %s rows of %s, which %s owns", d.Name, p.v, tbl, p.k, owner(p.k))
					}
				}
			}
		}
	}
	if in.Replicated {
		leftBehind.Detail = "replicated databases: every row is expected everywhere (see the next check)"
		same := newInv("the replicated databases hold the same books")
		ref := sums[in.Databases[0].Name]
		for _, d := range in.Databases[1:] {
			if got := sums[d.Name]; got.Txns != ref.Txns || got.Legs != ref.Legs || got.Held() != ref.Held() || got.Clearing != ref.Clearing {
				same.violate("%s: %d transactions, %d legs, %d held, clearing %d; %s: %d, %d, %d, %d", d.Name,
					got.Txns, got.Legs, got.Held(), got.Clearing, in.Databases[0].Name, ref.Txns, ref.Legs, ref.Held(), ref.Clearing)
			}
		}
		defer func() { rep.Invariants = append(rep.Invariants, *same) }()
	}

	// Acknowledged writes.
	exactly := newInv("every acknowledged payment exists exactly once, at the cell that owns it")
	for _, a := range in.Acks {
		if a.Op != load.OpPay && a.Op != load.OpRefund {
			continue
		}
		rep.Payments++
		found := byReq[a.RequestID]
		at := owner(a.Owner)
		want := dbOf[at]
		var here int
		for _, t := range found {
			if t.db == want {
				here++
			}
		}
		switch {
		case len(found) == 0:
			exactly.violate("%s %s of %s (%d cents, acknowledged by %s at %s) is in no cell's books", a.Op, a.RequestID, a.Owner, a.Amount, a.Cell, a.At.Format(time.TimeOnly))
			rep.Missing = append(rep.Missing, a)
		case here != 1:
			exactly.violate("%s %s of %s: %d copies in %s (owner %s), %d in all", a.Op, a.RequestID, a.Owner, here, want, at, len(found))
		case !in.Replicated && len(found) != 1:
			exactly.violate("%s %s of %s: also in %v", a.Op, a.RequestID, a.Owner, dbs(found))
		}
	}
	exactly.Detail = fmt.Sprintf("%d acknowledged payments and refunds checked", rep.Payments)

	twice := newInv("no order was paid twice")
	for order, ps := range payOfOrder {
		n := len(ps)
		if in.Replicated {
			n = 0
			for _, p := range ps {
				if p.db == in.Databases[0].Name {
					n++
				}
			}
		}
		if n > 1 {
			twice.violate("order %s paid %d times (%v)", order, n, dbs(ps))
		}
	}
	twice.Detail = fmt.Sprintf("%d paid orders", len(payOfOrder))

	// Money.
	var total paycell.Books
	for _, d := range in.Databases {
		total = total.Add(sums[d.Name])
		if in.Replicated {
			break // every database holds the same rows
		}
	}
	if total.Sum != 0 {
		ledger.violate("all legs of all cells sum to %d, not 0", total.Sum)
	}
	rep.Users, rep.Pending, rep.Settled, rep.InFlight = total.Users, total.MerchantPending, total.Merchants, total.Withdrawing
	money := newInv("money is conserved (bank in - bank out = users + merchants + withdrawals in flight)")
	held := rep.Users + rep.Pending + rep.Settled + rep.InFlight
	if held != in.BankIn-in.BankOut {
		money.violate("the books hold %d cents; the bank took in %d and paid out %d (%+d)", held, in.BankIn, in.BankOut, held-(in.BankIn-in.BankOut))
	}
	if -total.Clearing != in.BankIn-in.BankOut {
		money.violate("the clearing account says %d cents came in net; the bank says %d", -total.Clearing, in.BankIn-in.BankOut)
	}
	money.Detail = fmt.Sprintf("bank in %s, out %s; users %s, merchants pending %s, settled %s, withdrawals in flight %s",
		cents(in.BankIn), cents(in.BankOut), cents(rep.Users), cents(rep.Pending), cents(rep.Settled), cents(rep.InFlight))
	ledger.Detail = fmt.Sprintf("%d databases", len(in.Databases))

	rep.Invariants = append(rep.Invariants, *exactly, *twice, *ledger, *money)
	if in.Admissions != nil {
		rep.Invariants = append(rep.Invariants, slotWriters(in.Admissions, in.Table.SlotCount(), in.Pinned))
	}
	if !in.Replicated {
		if leftBehind.OK {
			leftBehind.Detail = fmt.Sprintf("%d rows, all at their owners", rep.Rows)
		}
		rep.Invariants = append(rep.Invariants, *leftBehind)
	}
	rep.CheckedFor = time.Since(start)
	return rep, nil
}

func dbs(ts []txnRow) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.db)
	}
	return out
}

type pair struct {
	k string
	v int64
}

func queryPairs(ctx context.Context, db *sql.DB, q string) ([]pair, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pair
	for rows.Next() {
		var p pair
		var v sql.NullInt64
		if err := rows.Scan(&p.k, &v); err != nil {
			return nil, err
		}
		p.v = v.Int64
		out = append(out, p)
	}
	return out, rows.Err()
}

// slotWriters checks that for every slot the intervals in which different
// cells admitted writes never overlap; keys pinned by the whitelist (and IDs
// minted for them) are checked by key instead, since a pin overrides its
// slot.
func slotWriters(recs []admission.Record, slotCount int, pinned []string) Invariant {
	inv := newInv("no slot was written by two cells at once (guards' admission records)")
	pins := map[uint64]bool{}
	for _, k := range pinned {
		pins[router.KeyHash(k)] = true
	}
	// Group writes by unit: a slot, or a pinned key's hash.
	units := map[string][]admission.Record{}
	writes := 0
	for _, r := range recs {
		if r.Kind != cell.Write {
			continue
		}
		writes++
		h := router.KeyHash(r.Key)
		u := fmt.Sprintf("slot %d", router.KeySlot(r.Key, slotCount))
		if pins[h] {
			u = fmt.Sprintf("pinned key hash %x", h)
		}
		units[u] = append(units[u], r)
	}
	// Conflicts checks overlaps per key: give each record its unit as key.
	var keyed []admission.Record
	for u, rs := range units {
		for _, r := range rs {
			r.Key = u
			keyed = append(keyed, r)
		}
	}
	for _, c := range admission.Conflicts(keyed) {
		inv.violate("%s: %s admitted a write at %s while %s's (from %s) was running", c.A.Key, c.B.Cell, c.B.Start.Format("15:04:05.000000"), c.A.Cell, c.A.Start.Format("15:04:05.000000"))
	}
	inv.Detail = fmt.Sprintf("%d writes in %d slots and pinned keys", writes, len(units))
	return *inv
}

func cents(c int64) string {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100)
}
