package paycell

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/router"
)

// Service is one cell's payment chain over its SQL books. It is safe for
// concurrent use. It does not check that the cell owns the keys it serves:
// the cell guard in front of it does (see HTTPGuardConfig, GRPCGuardConfig).
type Service struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger
}

// New returns a service over cfg.DB, whose schema must be migrated
// (schema.Migrate).
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, db: cfg.DB, log: cfg.Logger.With("cell", cfg.Cell)}, nil
}

// Cell is the cell the service runs in.
func (s *Service) Cell() string { return s.cfg.Cell }

// SlotCount is the slot count rows are stamped with.
func (s *Service) SlotCount() int { return s.cfg.SlotCount }

// DB is the database of the books.
func (s *Service) DB() *sql.DB { return s.db }

// Dialect is the database's engine.
func (s *Service) Dialect() sqldb.Dialect { return s.cfg.Dialect }

// Slot is the slot of an owner key.
func (s *Service) Slot(owner string) int { return router.KeySlot(owner, s.cfg.SlotCount) }

// OpenAccount opens owner's account with a zero balance. Opening an open
// account is not an error: it returns the account.
func (s *Service) OpenAccount(ctx context.Context, r OpenRequest) (Account, error) {
	if err := r.check(); err != nil {
		return Account{}, err
	}
	out, err := idempotent(ctx, s, r.Owner, true, call{"open", r.RequestID, r}, func(_ context.Context, t *txn) (Account, error) {
		return Account{Owner: r.Owner, Balance: t.balance}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// Balance returns owner's balance.
func (s *Service) Balance(ctx context.Context, owner string) (Account, error) {
	if err := CheckName("owner", owner); err != nil {
		return Account{}, err
	}
	a := Account{Owner: owner, Cell: s.cfg.Cell}
	err := s.db.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE owner = ?", owner).Scan(&a.Balance)
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, &NotFoundError{What: "account", ID: owner}
	}
	if err != nil {
		return Account{}, fmt.Errorf("paycell: balance of %s: %w", owner, err)
	}
	return a, nil
}

// Statement returns owner's balance and latest limit entries (0: the
// configured default), newest first, read in one transaction.
func (s *Service) Statement(ctx context.Context, owner string, limit int) (Statement, error) {
	if err := CheckName("owner", owner); err != nil {
		return Statement{}, err
	}
	if limit == 0 {
		limit = s.cfg.StatementLimit
	}
	if limit < 1 || limit > MaxStatementLimit {
		return Statement{}, badRequest("limit %d: want 1-%d", limit, MaxStatementLimit)
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: s.cfg.Dialect == sqldb.MySQL})
	if err != nil {
		return Statement{}, fmt.Errorf("paycell: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	st := Statement{Owner: owner, Entries: []StatementEntry{}, Cell: s.cfg.Cell}
	err = tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE owner = ?", owner).Scan(&st.Balance)
	if errors.Is(err, sql.ErrNoRows) {
		return Statement{}, &NotFoundError{What: "account", ID: owner}
	}
	if err != nil {
		return Statement{}, fmt.Errorf("paycell: statement of %s: %w", owner, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT e.txn_id, t.kind, t.ref, e.amount, t.at
		FROM entries e JOIN txns t ON t.txn_id = e.txn_id
		WHERE e.owner = ? AND e.account = ?
		ORDER BY t.at DESC, e.txn_id DESC LIMIT ?`, owner, UserAccount(owner), limit)
	if err != nil {
		return Statement{}, fmt.Errorf("paycell: statement of %s: %w", owner, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e StatementEntry
		if err := rows.Scan(&e.TxnID, &e.Kind, &e.Ref, &e.Amount, &e.At); err != nil {
			return Statement{}, fmt.Errorf("paycell: statement of %s: %w", owner, err)
		}
		st.Entries = append(st.Entries, e)
	}
	if err := rows.Err(); err != nil {
		return Statement{}, fmt.Errorf("paycell: statement of %s: %w", owner, err)
	}
	return st, nil
}

// CreateOrder creates an order of owner's to merchant. Its ID is minted
// for owner, so it routes to owner's cell.
func (s *Service) CreateOrder(ctx context.Context, r CreateOrderRequest) (Order, error) {
	if err := r.check(); err != nil {
		return Order{}, err
	}
	out, err := idempotent(ctx, s, r.Owner, false, call{"create_order", r.RequestID, r}, func(ctx context.Context, t *txn) (Order, error) {
		id, err := s.cfg.IDs.New(IDKindOrder, r.Owner)
		if err != nil {
			return Order{}, fmt.Errorf("paycell: mint order id: %w", err)
		}
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO orders (order_id, slot, owner, merchant, amount, refunded, status, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)`, id, t.slot, r.Owner, r.Merchant, r.Amount, OrderCreated, t.now, t.now); err != nil {
			return Order{}, fmt.Errorf("paycell: insert order: %w", err)
		}
		return Order{OrderID: id, Owner: r.Owner, Merchant: r.Merchant, Amount: r.Amount, Status: OrderCreated}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// Order returns an order.
func (s *Service) Order(ctx context.Context, orderID string) (Order, error) {
	if err := checkID("orderId", IDKindOrder, orderID); err != nil {
		return Order{}, err
	}
	o, err := scanOrder(s.db.QueryRowContext(ctx, orderQuery, orderID), orderID)
	if err != nil {
		return Order{}, err
	}
	o.Cell = s.cfg.Cell
	return o, nil
}

const orderQuery = "SELECT order_id, owner, merchant, amount, refunded, status FROM orders WHERE order_id = ?"

func scanOrder(row *sql.Row, orderID string) (Order, error) {
	var o Order
	err := row.Scan(&o.OrderID, &o.Owner, &o.Merchant, &o.Amount, &o.Refunded, &o.Status)
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, &NotFoundError{What: "order", ID: orderID}
	}
	if err != nil {
		return Order{}, fmt.Errorf("paycell: read order %s: %w", orderID, err)
	}
	return o, nil
}

// ownerOf reads the owner of an order or a bank operation (which never
// changes) before the transaction that locks the owner's account.
func (s *Service) ownerOf(ctx context.Context, table, idCol, id, what string) (string, error) {
	var owner string
	err := s.db.QueryRowContext(ctx, "SELECT owner FROM "+table+" WHERE "+idCol+" = ?", id).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return "", &NotFoundError{What: what, ID: id}
	}
	if err != nil {
		return "", fmt.Errorf("paycell: read %s %s: %w", what, id, err)
	}
	return owner, nil
}

// Pay pays an order from its owner's balance: legs user:<owner> -amount,
// mpend:<merchant> +amount. A short balance is an *InsufficientFundsError;
// an order that is not "created" a conflict.
func (s *Service) Pay(ctx context.Context, r PayRequest) (Payment, error) {
	if err := r.check(); err != nil {
		return Payment{}, err
	}
	owner, err := s.ownerOf(ctx, "orders", "order_id", r.OrderID, "order")
	if err != nil {
		return Payment{}, err
	}
	out, err := idempotent(ctx, s, owner, false, call{"pay", r.RequestID, r}, func(ctx context.Context, t *txn) (Payment, error) {
		o, err := scanOrder(t.tx.QueryRowContext(ctx, orderQuery, r.OrderID), r.OrderID)
		if err != nil {
			return Payment{}, err
		}
		if o.Status != OrderCreated {
			return Payment{}, &ConflictError{Reason: fmt.Sprintf("order %s is %s", o.OrderID, o.Status)}
		}
		if t.balance < o.Amount {
			return Payment{}, &InsufficientFundsError{Owner: owner, Balance: t.balance, Amount: o.Amount}
		}
		txnID, err := t.post(ctx, KindPay, o.OrderID, r.RequestID,
			leg{UserAccount(owner), -o.Amount}, leg{MerchantPending(o.Merchant), o.Amount})
		if err != nil {
			return Payment{}, err
		}
		if err := t.addBalance(ctx, -o.Amount); err != nil {
			return Payment{}, err
		}
		if err := t.setOrder(ctx, o.OrderID, o.Refunded, OrderPaid); err != nil {
			return Payment{}, err
		}
		return Payment{OrderID: o.OrderID, TxnID: txnID, Status: OrderPaid, Balance: t.balance}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

func (t *txn) setOrder(ctx context.Context, orderID string, refunded int64, status string) error {
	if _, err := t.tx.ExecContext(ctx, "UPDATE orders SET refunded = ?, status = ?, updated_at = ? WHERE order_id = ?",
		refunded, status, t.now, orderID); err != nil {
		return fmt.Errorf("paycell: update order %s: %w", orderID, err)
	}
	return nil
}

// Refund gives back part or all of a paid order: legs mpend:<merchant>
// -amount, user:<owner> +amount. Cumulative refunds never exceed the
// order's amount (*RefundExceedsError); an order that was not paid is a
// conflict.
func (s *Service) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	if err := r.check(); err != nil {
		return Refund{}, err
	}
	owner, err := s.ownerOf(ctx, "orders", "order_id", r.OrderID, "order")
	if err != nil {
		return Refund{}, err
	}
	out, err := idempotent(ctx, s, owner, false, call{"refund", r.RequestID, r}, func(ctx context.Context, t *txn) (Refund, error) {
		o, err := scanOrder(t.tx.QueryRowContext(ctx, orderQuery, r.OrderID), r.OrderID)
		if err != nil {
			return Refund{}, err
		}
		if o.Status != OrderPaid && o.Status != OrderPartiallyRefunded {
			return Refund{}, &ConflictError{Reason: fmt.Sprintf("order %s is %s; only a paid order can be refunded", o.OrderID, o.Status)}
		}
		if o.Refunded+r.Amount > o.Amount {
			return Refund{}, &RefundExceedsError{OrderID: o.OrderID, Amount: o.Amount, Refunded: o.Refunded, Asked: r.Amount}
		}
		txnID, err := t.post(ctx, KindRefund, o.OrderID, r.RequestID,
			leg{MerchantPending(o.Merchant), -r.Amount}, leg{UserAccount(owner), r.Amount})
		if err != nil {
			return Refund{}, err
		}
		if err := t.addBalance(ctx, r.Amount); err != nil {
			return Refund{}, err
		}
		refunded, status := o.Refunded+r.Amount, OrderPartiallyRefunded
		if refunded == o.Amount {
			status = OrderRefunded
		}
		if err := t.setOrder(ctx, o.OrderID, refunded, status); err != nil {
			return Refund{}, err
		}
		return Refund{OrderID: o.OrderID, TxnID: txnID, Refunded: refunded, Status: status, Balance: t.balance}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// TopUp records a pending top-up and, once committed, hands it to the
// bank. The balance moves when the bank's callback says it succeeded.
func (s *Service) TopUp(ctx context.Context, r BankRequest) (TopUp, error) {
	if err := r.check(); err != nil {
		return TopUp{}, err
	}
	out, err := idempotent(ctx, s, r.Owner, false, call{"topup", r.RequestID, r}, func(ctx context.Context, t *txn) (TopUp, error) {
		opID, err := t.newBankOp(ctx, BankTopUp, r.Amount)
		if err != nil {
			return TopUp{}, err
		}
		return TopUp{OpID: opID, Status: BankPending}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// Withdraw debits owner into bank:withdrawing at once and hands the
// withdrawal to the bank once committed; a failed withdrawal gives the
// money back (BankCallback).
func (s *Service) Withdraw(ctx context.Context, r BankRequest) (Withdrawal, error) {
	if err := r.check(); err != nil {
		return Withdrawal{}, err
	}
	out, err := idempotent(ctx, s, r.Owner, false, call{"withdraw", r.RequestID, r}, func(ctx context.Context, t *txn) (Withdrawal, error) {
		if t.balance < r.Amount {
			return Withdrawal{}, &InsufficientFundsError{Owner: r.Owner, Balance: t.balance, Amount: r.Amount}
		}
		opID, err := t.newBankOp(ctx, BankWithdraw, r.Amount)
		if err != nil {
			return Withdrawal{}, err
		}
		if _, err := t.post(ctx, KindWithdraw, opID, r.RequestID,
			leg{UserAccount(r.Owner), -r.Amount}, leg{AccountBankWithdrawing, r.Amount}); err != nil {
			return Withdrawal{}, err
		}
		if err := t.addBalance(ctx, -r.Amount); err != nil {
			return Withdrawal{}, err
		}
		return Withdrawal{OpID: opID, Status: BankPending, Balance: t.balance}, nil
	})
	if err != nil {
		return out, err
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// newBankOp inserts a pending bank operation and submits it after commit.
func (t *txn) newBankOp(ctx context.Context, kind string, amount int64) (string, error) {
	opID, err := t.s.cfg.IDs.New(IDKindBankOp, t.owner)
	if err != nil {
		return "", fmt.Errorf("paycell: mint bank op id: %w", err)
	}
	if _, err := t.tx.ExecContext(ctx, `INSERT INTO bank_ops (op_id, slot, owner, kind, amount, status, created_at, done_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`, opID, t.slot, t.owner, kind, amount, BankPending, t.now); err != nil {
		return "", fmt.Errorf("paycell: insert bank op: %w", err)
	}
	t.afterCommit(func(ctx context.Context) { t.s.submit(ctx, opID, kind, amount) })
	return opID, nil
}

func (s *Service) submit(ctx context.Context, opID, kind string, amount int64) {
	if s.cfg.Bank == nil {
		return
	}
	if err := s.cfg.Bank.Submit(ctx, opID, kind, amount); err != nil {
		// The op stays pending; ResubmitPending hands it over again.
		s.log.Warn("bank submit failed; will resubmit", "op", opID, "kind", kind, "amount", amount, "err", err)
	}
}

// BankCallback applies the bank's answer on an operation, once: the status
// moves from pending to succeeded or failed, and money moves with it
// (a top-up that succeeded credits the user from bank:clearing; a
// withdrawal that succeeded is paid out of bank:withdrawing; one that
// failed returns the money to the user). A callback that repeats the
// recorded status returns it again; one that contradicts it is a conflict.
func (s *Service) BankCallback(ctx context.Context, r CallbackRequest) (Callback, error) {
	if err := r.check(); err != nil {
		return Callback{}, err
	}
	owner, err := s.ownerOf(ctx, "bank_ops", "op_id", r.OpID, "bank operation")
	if err != nil {
		return Callback{}, err
	}
	out := Callback{OpID: r.OpID}
	err = s.inTx(ctx, owner, false, func(ctx context.Context, t *txn) error {
		var kind, status string
		var amount int64
		if err := t.tx.QueryRowContext(ctx, "SELECT kind, amount, status FROM bank_ops WHERE op_id = ?", r.OpID).Scan(&kind, &amount, &status); err != nil {
			return fmt.Errorf("paycell: read bank op %s: %w", r.OpID, err)
		}
		out.Status = status
		if status != BankPending {
			if status == r.Status {
				return nil
			}
			return &ConflictError{Reason: fmt.Sprintf("bank operation %s already %s; callback says %s", r.OpID, status, r.Status)}
		}
		if _, err := t.tx.ExecContext(ctx, "UPDATE bank_ops SET status = ?, done_at = ? WHERE op_id = ?", r.Status, t.now, r.OpID); err != nil {
			return fmt.Errorf("paycell: update bank op %s: %w", r.OpID, err)
		}
		out.Status = r.Status
		var legs []leg
		var txKind string
		var credit int64
		switch {
		case kind == BankTopUp && r.Status == BankSucceeded:
			txKind, credit = KindTopUp, amount
			legs = []leg{{AccountBankClearing, -amount}, {UserAccount(owner), amount}}
		case kind == BankWithdraw && r.Status == BankSucceeded:
			txKind = KindWithdrawDone
			legs = []leg{{AccountBankWithdrawing, -amount}, {AccountBankClearing, amount}}
		case kind == BankWithdraw && r.Status == BankFailed:
			txKind, credit = KindWithdrawFailed, amount
			legs = []leg{{AccountBankWithdrawing, -amount}, {UserAccount(owner), amount}}
		default: // a failed top-up moved nothing
			return nil
		}
		if _, err := t.post(ctx, txKind, r.OpID, "", legs...); err != nil {
			return err
		}
		if credit != 0 {
			return t.addBalance(ctx, credit)
		}
		return nil
	})
	if err != nil {
		return Callback{}, err
	}
	if out.Status == r.Status {
		s.log.Debug("bank callback", "op", r.OpID, "status", r.Status, "bank_ref", r.BankRef)
	}
	out.Cell = s.cfg.Cell
	return out, nil
}

// ResubmitPending hands the bank every operation still pending that was
// created at least olderThan ago (at most limit of them, oldest first) and
// returns how many it submitted. Submit is idempotent by operation ID, so
// an operation the bank already has is not decided twice.
func (s *Service) ResubmitPending(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if s.cfg.Bank == nil {
		return 0, nil
	}
	before := s.cfg.Clock.Now().Add(-olderThan).UnixMilli()
	rows, err := s.db.QueryContext(ctx, "SELECT op_id, kind, amount FROM bank_ops WHERE status = ? AND created_at <= ? ORDER BY created_at LIMIT ?",
		BankPending, before, limit)
	if err != nil {
		return 0, fmt.Errorf("paycell: pending bank ops: %w", err)
	}
	type op struct {
		id, kind string
		amount   int64
	}
	var ops []op
	for rows.Next() {
		var o op
		if err := rows.Scan(&o.id, &o.kind, &o.amount); err != nil {
			rows.Close()
			return 0, fmt.Errorf("paycell: pending bank ops: %w", err)
		}
		ops = append(ops, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("paycell: pending bank ops: %w", err)
	}
	n := 0
	for _, o := range ops {
		if err := s.cfg.Bank.Submit(ctx, o.id, o.kind, o.amount); err != nil {
			return n, fmt.Errorf("paycell: resubmit %s: %w", o.id, err)
		}
		n++
	}
	return n, nil
}
