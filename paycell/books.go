package paycell

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// Books sums one database's books for invariant checks. Sums are in minor
// units. Fields that hold across cells only (money moves between cells with
// users' slots) are sums the caller adds up over every cell.
type Books struct {
	Txns int   `json:"txns"`
	Legs int   `json:"legs"`
	Sum  int64 `json:"sum"` // every leg; 0 in balanced books

	Users           int64 `json:"users"`           // user:* legs
	Balances        int64 `json:"balances"`        // accounts.balance
	MerchantPending int64 `json:"merchantPending"` // mpend:* legs, settled or not
	Unsettled       int64 `json:"unsettled"`       // slot-scoped mpend:* legs not yet settled
	Merchants       int64 `json:"merchants"`       // merchant:* legs (settled)
	Clearing        int64 `json:"clearing"`        // bank:clearing: minus the money the bank brought in net
	Withdrawing     int64 `json:"withdrawing"`     // bank:withdrawing: withdrawals not yet paid out

	PendingTopUps      int64 `json:"pendingTopUps"`      // amounts of pending top-ups
	PendingWithdrawals int64 `json:"pendingWithdrawals"` // amounts of pending withdrawals
	Orders             int   `json:"orders"`
	Paid               int64 `json:"paid"`     // amounts of orders paid (including later refunded)
	Refunded           int64 `json:"refunded"` // refunded amounts

	// Problems lists what breaks a per-cell invariant: an unbalanced
	// transaction, a balance that is not the sum of its user's legs, a row
	// whose slot is not its owner's slot, withdrawals pending at the bank
	// that bank:withdrawing does not hold.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the per-cell invariants hold.
func (b Books) OK() bool { return len(b.Problems) == 0 }

// Add sums two cells' books (problems are concatenated).
func (b Books) Add(o Books) Books {
	b.Txns += o.Txns
	b.Legs += o.Legs
	b.Sum += o.Sum
	b.Users += o.Users
	b.Balances += o.Balances
	b.MerchantPending += o.MerchantPending
	b.Unsettled += o.Unsettled
	b.Merchants += o.Merchants
	b.Clearing += o.Clearing
	b.Withdrawing += o.Withdrawing
	b.PendingTopUps += o.PendingTopUps
	b.PendingWithdrawals += o.PendingWithdrawals
	b.Orders += o.Orders
	b.Paid += o.Paid
	b.Refunded += o.Refunded
	b.Problems = append(slices.Clone(b.Problems), o.Problems...)
	return b
}

// Held is the money users and merchants hold, plus withdrawals on their
// way out: across all cells it equals -Clearing, the bank's net deposits
// whose callbacks were applied.
func (b Books) Held() int64 { return b.Users + b.MerchantPending + b.Merchants + b.Withdrawing }

// ReadBooks reads and checks one database's books. slotCount is the
// cluster's slot count (to check every row's slot).
func ReadBooks(ctx context.Context, db *sql.DB, slotCount int) (Books, error) {
	var b Books
	problem := func(format string, args ...any) {
		if len(b.Problems) < 50 {
			b.Problems = append(b.Problems, fmt.Sprintf(format, args...))
		}
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM txns").Scan(&b.Txns); err != nil {
		return b, fmt.Errorf("paycell: books: %w", err)
	}
	// Legs by account.
	legs := map[string]int64{}
	err := eachRow(ctx, db, "SELECT account, COALESCE(SUM(amount), 0), COUNT(*) FROM entries GROUP BY account", func(r *sql.Rows) error {
		var acct string
		var sum int64
		var n int
		if err := r.Scan(&acct, &sum, &n); err != nil {
			return err
		}
		legs[acct] = sum
		b.Legs += n
		b.Sum += sum
		switch {
		case strings.HasPrefix(acct, "user:"):
			b.Users += sum
		case strings.HasPrefix(acct, "mpend:"):
			b.MerchantPending += sum
		case strings.HasPrefix(acct, "merchant:"):
			b.Merchants += sum
		case acct == AccountBankClearing:
			b.Clearing += sum
		case acct == AccountBankWithdrawing:
			b.Withdrawing += sum
		default:
			problem("legs on unknown account %q", acct)
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	if b.Sum != 0 {
		problem("legs sum to %d, not 0", b.Sum)
	}
	err = eachRow(ctx, db, "SELECT txn_id, SUM(amount) FROM entries GROUP BY txn_id HAVING SUM(amount) <> 0", func(r *sql.Rows) error {
		var id string
		var sum int64
		if err := r.Scan(&id, &sum); err != nil {
			return err
		}
		problem("txn %s legs sum to %d", id, sum)
		return nil
	})
	if err != nil {
		return b, err
	}
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE "+mpendRange+" AND settled_by IS NULL AND slot >= 0").Scan(&b.Unsettled); err != nil {
		return b, fmt.Errorf("paycell: books: %w", err)
	}
	// Balances against legs.
	seen := map[string]bool{}
	err = eachRow(ctx, db, "SELECT owner, balance FROM accounts", func(r *sql.Rows) error {
		var owner string
		var bal int64
		if err := r.Scan(&owner, &bal); err != nil {
			return err
		}
		b.Balances += bal
		seen[UserAccount(owner)] = true
		if l := legs[UserAccount(owner)]; l != bal {
			problem("account %s: balance %d, legs %d", owner, bal, l)
		}
		if bal < 0 {
			problem("account %s overdrawn: %d", owner, bal)
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	for acct, sum := range legs {
		if strings.HasPrefix(acct, "user:") && !seen[acct] {
			problem("legs of %d on %s, which has no account row", sum, acct)
		}
	}
	// Bank operations.
	err = eachRow(ctx, db, "SELECT kind, COALESCE(SUM(amount), 0) FROM bank_ops WHERE status = 'pending' GROUP BY kind", func(r *sql.Rows) error {
		var kind string
		var sum int64
		if err := r.Scan(&kind, &sum); err != nil {
			return err
		}
		switch kind {
		case BankTopUp:
			b.PendingTopUps = sum
		case BankWithdraw:
			b.PendingWithdrawals = sum
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	if b.PendingWithdrawals != b.Withdrawing {
		problem("pending withdrawals %d, bank:withdrawing holds %d", b.PendingWithdrawals, b.Withdrawing)
	}
	// Orders.
	err = db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status <> 'created' THEN amount ELSE 0 END), 0), COALESCE(SUM(refunded), 0) FROM orders").
		Scan(&b.Orders, &b.Paid, &b.Refunded)
	if err != nil {
		return b, fmt.Errorf("paycell: books: %w", err)
	}
	// Slots.
	for _, t := range schema.SlotTables {
		err := eachRow(ctx, db, "SELECT DISTINCT slot, owner FROM "+t.Name, func(r *sql.Rows) error {
			var slot int
			var owner string
			if err := r.Scan(&slot, &owner); err != nil {
				return err
			}
			switch {
			case slot == -1:
				if !strings.HasPrefix(owner, "cell:") || (t.Name != "txns" && t.Name != "entries") {
					problem("%s: cell-scoped row (slot -1) of owner %q", t.Name, owner)
				}
			case slot != router.KeySlot(owner, slotCount):
				problem("%s: row of %s in slot %d, want %d", t.Name, owner, slot, router.KeySlot(owner, slotCount))
			}
			return nil
		})
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

func eachRow(ctx context.Context, db *sql.DB, q string, f func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("paycell: books: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return fmt.Errorf("paycell: books: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("paycell: books: %w", err)
	}
	return nil
}
