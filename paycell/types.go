package paycell

import (
	"fmt"
	"strings"

	"github.com/cellkit/cellkit/router"
)

// Order statuses.
const (
	OrderCreated           = "created"
	OrderPaid              = "paid"
	OrderRefunded          = "refunded"
	OrderPartiallyRefunded = "partially_refunded"
)

// Bank operation kinds and statuses.
const (
	BankTopUp    = "topup"
	BankWithdraw = "withdraw"

	BankPending   = "pending"
	BankSucceeded = "succeeded"
	BankFailed    = "failed"
)

// Transaction kinds (txns.kind).
const (
	KindTopUp          = "topup"
	KindPay            = "pay"
	KindRefund         = "refund"
	KindWithdraw       = "withdraw"
	KindWithdrawDone   = "withdraw_done"
	KindWithdrawFailed = "withdraw_failed"
	KindSettle         = "settle" // cell-scoped: nets a merchant's pending legs
)

// ID kinds of the slot-bearing IDs the service mints.
const (
	IDKindOrder  = "ord"
	IDKindBankOp = "bop"
	IDKindTxn    = "txn"
	IDKindBatch  = "stl"
)

// Account names of ledger legs.
const (
	AccountBankClearing    = "bank:clearing"    // money that came in from (or went out to) the bank
	AccountBankWithdrawing = "bank:withdrawing" // withdrawals debited, not yet paid out
)

// UserAccount is the ledger account of a user's balance.
func UserAccount(owner string) string { return "user:" + owner }

// MerchantPending is the account of a merchant's cell-local pending credits.
func MerchantPending(merchant string) string { return "mpend:" + merchant }

// MerchantAccount is the account of a merchant's settled credits.
func MerchantAccount(merchant string) string { return "merchant:" + merchant }

// CellOwner is the owner of a cell's settlement rows (slot -1).
func CellOwner(cell string) string { return "cell:" + cell }

// Limits of request fields.
const (
	MaxNameLen      = 64 // owners and merchants
	MaxRequestIDLen = 64
	// MaxAmount bounds one amount (minor units) so that sums stay far from
	// overflow and amounts survive JSON numbers (2^53) exactly.
	MaxAmount = 1_000_000_000_000_000
)

// CheckName reports whether s can be an owner or a merchant: 1-64 of
// A-Z a-z 0-9 . _ - (no ':' so that account names stay unambiguous).
func CheckName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return badRequest("%s %q: want 1-%d characters", what, clip(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return badRequest("%s %q: character %q not allowed (want A-Z a-z 0-9 . _ -)", what, clip(s), c)
		}
	}
	return nil
}

// CheckRequestID reports whether s can be a requestId: 1-64 printable
// ASCII characters without spaces.
func CheckRequestID(s string) error {
	if s == "" {
		return badRequest("requestId is required")
	}
	if len(s) > MaxRequestIDLen {
		return badRequest("requestId of %d characters (max %d)", len(s), MaxRequestIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return badRequest("requestId %q: want printable ASCII without spaces", clip(s))
		}
	}
	return nil
}

// CheckAmount reports whether a is a usable amount: 1..MaxAmount.
func CheckAmount(a int64) error {
	if a <= 0 || a > MaxAmount {
		return badRequest("amount %d: want a whole number of minor units from 1 to %d", a, int64(MaxAmount))
	}
	return nil
}

// checkID reports whether id is a well-formed slot-bearing ID of kind.
func checkID(what, kind, id string) error {
	info, err := router.ParseID(id)
	if err != nil {
		return badRequest("%s: %v", what, err)
	}
	if info.Kind != kind {
		return badRequest("%s %q: kind %q, want %q", what, clip(id), info.Kind, kind)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// --- requests ---

// OpenRequest opens an account (idempotent: opening an open account
// returns it).
type OpenRequest struct {
	Owner     string `json:"owner"`
	RequestID string `json:"requestId"`
}

// CreateOrderRequest creates an order of amount to merchant.
type CreateOrderRequest struct {
	Owner     string `json:"owner"`
	RequestID string `json:"requestId"`
	Merchant  string `json:"merchant"`
	Amount    int64  `json:"amount"`
}

// PayRequest pays an order from its owner's balance.
type PayRequest struct {
	OrderID   string `json:"orderId"`
	RequestID string `json:"requestId"`
}

// RefundRequest refunds part or all of a paid order.
type RefundRequest struct {
	OrderID   string `json:"orderId"`
	RequestID string `json:"requestId"`
	Amount    int64  `json:"amount"`
}

// BankRequest asks the bank for a top-up or a withdrawal.
type BankRequest struct {
	Owner     string `json:"owner"`
	RequestID string `json:"requestId"`
	Amount    int64  `json:"amount"`
}

// CallbackRequest is the bank's answer on an operation.
type CallbackRequest struct {
	OpID    string `json:"opId"`
	Status  string `json:"status"` // BankSucceeded or BankFailed
	BankRef string `json:"bankRef,omitempty"`
}

func (r OpenRequest) check() error {
	return firstErr(CheckName("owner", r.Owner), CheckRequestID(r.RequestID))
}

func (r CreateOrderRequest) check() error {
	return firstErr(CheckName("owner", r.Owner), CheckRequestID(r.RequestID), CheckName("merchant", r.Merchant), CheckAmount(r.Amount))
}

func (r PayRequest) check() error {
	return firstErr(checkID("orderId", IDKindOrder, r.OrderID), CheckRequestID(r.RequestID))
}

func (r RefundRequest) check() error {
	return firstErr(checkID("orderId", IDKindOrder, r.OrderID), CheckRequestID(r.RequestID), CheckAmount(r.Amount))
}

func (r BankRequest) check() error {
	return firstErr(CheckName("owner", r.Owner), CheckRequestID(r.RequestID), CheckAmount(r.Amount))
}

func (r CallbackRequest) check() error {
	if err := checkID("opId", IDKindBankOp, r.OpID); err != nil {
		return err
	}
	if r.Status != BankSucceeded && r.Status != BankFailed {
		return badRequest("status %q: want %q or %q", clip(r.Status), BankSucceeded, BankFailed)
	}
	if len(r.BankRef) > 128 {
		return badRequest("bankRef of %d characters (max 128)", len(r.BankRef))
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// --- replies ---
// Every reply carries Cell, the cell that served it. A retried write
// returns the first result, with Cell set to the cell serving the retry.

// Account is a user's balance.
type Account struct {
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
	Cell    string `json:"cell"`
}

// StatementEntry is one leg on a user's account.
type StatementEntry struct {
	TxnID  string `json:"txnId"`
	Kind   string `json:"kind"`
	Ref    string `json:"ref"`
	Amount int64  `json:"amount"`
	At     int64  `json:"at"` // Unix milliseconds
}

// Statement is a user's balance and latest entries, newest first.
type Statement struct {
	Owner   string           `json:"owner"`
	Balance int64            `json:"balance"`
	Entries []StatementEntry `json:"entries"`
	Cell    string           `json:"cell"`
}

// Order is an order's state.
type Order struct {
	OrderID  string `json:"orderId"`
	Owner    string `json:"owner"`
	Merchant string `json:"merchant"`
	Amount   int64  `json:"amount"`
	Refunded int64  `json:"refunded"`
	Status   string `json:"status"`
	Cell     string `json:"cell"`
}

// Payment is the result of paying an order.
type Payment struct {
	OrderID string `json:"orderId"`
	TxnID   string `json:"txnId"`
	Status  string `json:"status"`
	Balance int64  `json:"balance"`
	Cell    string `json:"cell"`
}

// Refund is the result of a refund.
type Refund struct {
	OrderID  string `json:"orderId"`
	TxnID    string `json:"txnId"`
	Refunded int64  `json:"refunded"` // cumulative
	Status   string `json:"status"`
	Balance  int64  `json:"balance"`
	Cell     string `json:"cell"`
}

// TopUp is an accepted top-up, pending at the bank.
type TopUp struct {
	OpID   string `json:"opId"`
	Status string `json:"status"`
	Cell   string `json:"cell"`
}

// Withdrawal is an accepted withdrawal: the balance is debited at once.
type Withdrawal struct {
	OpID    string `json:"opId"`
	Status  string `json:"status"`
	Balance int64  `json:"balance"`
	Cell    string `json:"cell"`
}

// Callback is the state of a bank operation after its callback.
type Callback struct {
	OpID   string `json:"opId"`
	Status string `json:"status"`
	Cell   string `json:"cell"`
}

// String is for logs.
func (o Order) String() string {
	return fmt.Sprintf("order %s of %s to %s: %d (%s, refunded %d)", o.OrderID, o.Owner, o.Merchant, o.Amount, o.Status, o.Refunded)
}
