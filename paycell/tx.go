package paycell

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/sqldb"
)

// txn is one local transaction that holds an owner's account row: every
// write of the service runs in one, so the row changes, the balanced legs
// and the idempotency record commit together or not at all.
type txn struct {
	s       *Service
	tx      *sql.Tx
	owner   string
	slot    int
	now     int64 // Unix milliseconds
	balance int64 // the account's balance, kept current by addBalance
	after   []func(context.Context)
}

// leg is one side of a balanced movement.
type leg struct {
	account string
	amount  int64
}

// forUpdate is the locking suffix of a SELECT: on SQLite the immediate
// transaction already holds the database's write lock.
func (s *Service) forUpdate() string {
	if s.cfg.Dialect == sqldb.MySQL {
		return " FOR UPDATE"
	}
	return ""
}

// inTx runs fn in a transaction that first locks owner's account row
// (creating it when open is set), and retries the whole transaction when
// the database aborted it (deadlock, lock timeout, busy, a concurrent
// duplicate). Functions fn registered with afterCommit run once it
// committed. A missing account is a *NotFoundError.
func (s *Service) inTx(ctx context.Context, owner string, open bool, fn func(context.Context, *txn) error) error {
	for attempt := 1; ; attempt++ {
		after, err := s.tryTx(ctx, owner, open, fn)
		if err == nil {
			for _, f := range after {
				f(ctx)
			}
			return nil
		}
		if err := s.backoff(ctx, attempt, err, "owner", owner); err != nil {
			return err
		}
	}
}

// backoff decides on err, the failure of a transaction's attempt-th
// attempt: it returns err when a fresh attempt cannot fix it or the
// attempts are spent, and otherwise waits a growing, jittered while (5 ms ×
// attempt, up to twice that) so that the transactions a deadlock aborted do
// not meet again at once, and returns nil.
func (s *Service) backoff(ctx context.Context, attempt int, err error, logArgs ...any) error {
	if !retryable(err) || attempt >= s.cfg.TxAttempts || ctx.Err() != nil {
		return err
	}
	d := time.Duration(attempt) * 5 * time.Millisecond
	d += rand.N(d)
	s.log.Debug("transaction aborted by the database; retrying", append(logArgs, "attempt", attempt, "err", err, "in", d)...)
	if clock.Sleep(ctx, s.cfg.Clock, d) != nil {
		return fmt.Errorf("paycell: %w (after %v)", context.Cause(ctx), err)
	}
	return nil
}

// openAccountSQL inserts an account row unless it exists. On MySQL it is an
// upsert that changes nothing: a duplicate key then takes the row's
// exclusive lock at once, where INSERT IGNORE takes a shared one that the
// SELECT ... FOR UPDATE after it must upgrade, and concurrent openers of one
// account, all holding the shared lock, deadlock on that upgrade.
func (s *Service) openAccountSQL() string {
	const cols = " accounts (owner, slot, balance, opened_at, updated_at) VALUES (?, ?, 0, ?, ?)"
	if s.cfg.Dialect == sqldb.MySQL {
		return "INSERT INTO" + cols + " ON DUPLICATE KEY UPDATE owner = owner"
	}
	return s.cfg.Dialect.InsertIgnore() + cols
}

func (s *Service) tryTx(ctx context.Context, owner string, open bool, fn func(context.Context, *txn) error) ([]func(context.Context), error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("paycell: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	t := &txn{s: s, tx: tx, owner: owner, slot: s.Slot(owner), now: s.cfg.Clock.Now().UnixMilli()}
	if open {
		if _, err := tx.ExecContext(ctx, s.openAccountSQL(), owner, t.slot, t.now, t.now); err != nil {
			return nil, fmt.Errorf("paycell: open account %s: %w", owner, err)
		}
	}
	// The lock comes first: on MySQL the snapshot of the transaction's
	// plain reads is taken at its first plain read, after the lock, so
	// they see everything the previous holder committed.
	err = tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE owner = ?"+s.forUpdate(), owner).Scan(&t.balance)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, &NotFoundError{What: "account", ID: owner}
	}
	if err != nil {
		return nil, fmt.Errorf("paycell: lock account %s: %w", owner, err)
	}
	if err := fn(ctx, t); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("paycell: commit: %w", err)
	}
	return t.after, nil
}

// retryable reports whether the database aborted a transaction in a way a
// fresh attempt can fix.
func retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1213, // deadlock
			1205, // lock wait timeout
			1062: // duplicate key: a concurrent duplicate request won; the retry replays it
			return true
		}
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return true
		}
	}
	return false
}

// afterCommit runs f once the transaction has committed.
func (t *txn) afterCommit(f func(context.Context)) { t.after = append(t.after, f) }

// addBalance moves the account's balance by delta.
func (t *txn) addBalance(ctx context.Context, delta int64) error {
	if _, err := t.tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + ?, updated_at = ? WHERE owner = ?", delta, t.now, t.owner); err != nil {
		return fmt.Errorf("paycell: update balance of %s: %w", t.owner, err)
	}
	t.balance += delta
	return nil
}

// post writes a balanced transaction of the owner's: a txns row and its legs.
func (t *txn) post(ctx context.Context, kind, ref, requestID string, legs ...leg) (string, error) {
	id, err := t.s.cfg.IDs.New(IDKindTxn, t.owner)
	if err != nil {
		return "", fmt.Errorf("paycell: mint txn id: %w", err)
	}
	return id, insertTxn(ctx, t.tx, id, t.slot, t.owner, kind, ref, requestID, t.now, "", legs)
}

// insertTxn writes a transaction and its legs (settledBy "" leaves the legs
// unsettled). The legs must balance: anything else is a programming error
// that must never reach the books.
func insertTxn(ctx context.Context, tx *sql.Tx, id string, slot int, owner, kind, ref, requestID string, at int64, settledBy string, legs []leg) error {
	var sum int64
	for _, l := range legs {
		sum += l.amount
	}
	if sum != 0 || len(legs) < 2 {
		return fmt.Errorf("paycell: BUG: %s txn %s with %d legs summing to %d", kind, id, len(legs), sum)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO txns (txn_id, slot, owner, kind, ref, request_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		id, slot, owner, kind, ref, requestID, at); err != nil {
		return fmt.Errorf("paycell: insert %s txn: %w", kind, err)
	}
	var settled any // NULL
	if settledBy != "" {
		settled = settledBy
	}
	q := "INSERT INTO entries (txn_id, leg, slot, owner, account, amount, settled_by) VALUES " +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?), ", len(legs)), ", ")
	args := make([]any, 0, 7*len(legs))
	for i, l := range legs {
		args = append(args, id, i, slot, owner, l.account, l.amount, settled)
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("paycell: insert legs of %s txn: %w", kind, err)
	}
	return nil
}

// call identifies an idempotent request: its method, its requestId and its
// parameters (the whole request, compared as JSON on a retry).
type call struct {
	method    string
	requestID string
	params    any
}

// storedResult is what requests.result holds.
type storedResult struct {
	Params json.RawMessage `json:"params"`
	Reply  json.RawMessage `json:"reply"`
}

// replay looks the request up: found with the same method and parameters,
// it decodes the first reply into out; found with others, it is a conflict.
func (t *txn) replay(ctx context.Context, c call, out any) (bool, error) {
	var method, result string
	err := t.tx.QueryRowContext(ctx, "SELECT method, result FROM requests WHERE owner = ? AND request_id = ?", t.owner, c.requestID).Scan(&method, &result)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("paycell: read request %s: %w", c.requestID, err)
	}
	var st storedResult
	if err := json.Unmarshal([]byte(result), &st); err != nil {
		return false, fmt.Errorf("paycell: stored result of request %s: %w", c.requestID, err)
	}
	params, err := json.Marshal(c.params)
	if err != nil {
		return false, fmt.Errorf("paycell: encode request: %w", err)
	}
	if method != c.method || !bytes.Equal(st.Params, params) {
		return false, &ConflictError{Reason: fmt.Sprintf("requestId %q of %s was used for %s %s; this request is %s %s", c.requestID, t.owner, method, st.Params, c.method, params)}
	}
	if err := json.Unmarshal(st.Reply, out); err != nil {
		return false, fmt.Errorf("paycell: stored reply of request %s: %w", c.requestID, err)
	}
	return true, nil
}

// record stores the request's first result.
func (t *txn) record(ctx context.Context, c call, reply any) error {
	params, err := json.Marshal(c.params)
	if err != nil {
		return fmt.Errorf("paycell: encode request: %w", err)
	}
	rep, err := json.Marshal(reply)
	if err != nil {
		return fmt.Errorf("paycell: encode reply: %w", err)
	}
	result, err := json.Marshal(storedResult{Params: params, Reply: rep})
	if err != nil {
		return fmt.Errorf("paycell: encode result: %w", err)
	}
	if _, err := t.tx.ExecContext(ctx, "INSERT INTO requests (owner, request_id, slot, method, result, at) VALUES (?, ?, ?, ?, ?, ?)",
		t.owner, c.requestID, t.slot, c.method, string(result), t.now); err != nil {
		return fmt.Errorf("paycell: record request %s: %w", c.requestID, err)
	}
	return nil
}

// idempotent runs do once per (owner, requestId): a retry with the same
// parameters gets the first reply back, one with other parameters a
// conflict. Refusals (do's errors) are not recorded: they wrote nothing, and
// a retry is decided afresh.
func idempotent[R any](ctx context.Context, s *Service, owner string, open bool, c call, do func(context.Context, *txn) (R, error)) (R, error) {
	var out R
	err := s.inTx(ctx, owner, open, func(ctx context.Context, t *txn) error {
		var zero R
		out = zero
		if hit, err := t.replay(ctx, c, &out); err != nil || hit {
			return err
		}
		r, err := do(ctx, t)
		if err != nil {
			return err
		}
		out = r
		return t.record(ctx, c, r)
	})
	if err != nil {
		var zero R
		return zero, err
	}
	return out, nil
}
