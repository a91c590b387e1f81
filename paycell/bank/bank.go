package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
)

// Operation kinds and outcomes (the paycell constants, repeated so the bank
// stays independent of the service).
const (
	KindTopUp    = "topup"
	KindWithdraw = "withdraw"

	StatusPending   = "pending" // not decided yet
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Delivery states of an operation's callback.
const (
	DeliveryNone       = ""           // not decided yet
	DeliveryInProgress = "delivering" // sending, or waiting to retry
	DeliveryDone       = "delivered"  // a cell answered 200
	DeliveryRejected   = "rejected"   // a cell answered a final 4xx
	DeliveryDropped    = "dropped"    // attempts or time ran out, or the bank closed
)

// CallbackPath is the path callbacks are POSTed to under Config.CallbackURL;
// %s is the operation ID.
const CallbackPath = "/v1/bank/callbacks/%s"

// Errors.
var (
	ErrBadConfig = errors.New("bad bank configuration")
	ErrBadOp     = errors.New("bad bank operation")
	ErrConflict  = errors.New("operation ID reused with another kind or amount")
	ErrClosed    = errors.New("bank closed")
)

// Config configures a Bank. Zero values mean the defaults.
type Config struct {
	// CallbackURL is the base URL callbacks go to, as
	// POST {CallbackURL}/v1/bank/callbacks/{opId} with the JSON body
	// {"status": "succeeded"|"failed", "bankRef": "..."}; normally the
	// cellrouter, which sends each to the cell owning the operation.
	// Required.
	CallbackURL string
	// Delay is how long the bank takes to decide an operation. Default
	// 50ms; negative means at once.
	Delay time.Duration
	// FailureRate is the share of operations that fail, from 0 (default)
	// to 1.
	FailureRate float64
	// Seed makes outcomes deterministic: an operation's outcome and bank
	// reference are a function of Seed and its ID only.
	Seed uint64
	// HTTP sends the callbacks. Default a client with a 10s timeout.
	HTTP *http.Client
	// MaxAttempts bounds the attempts to deliver one callback. Default 100.
	MaxAttempts int
	// MaxElapsed bounds the time spent delivering one callback. Default 2m.
	MaxElapsed time.Duration
	// Backoff is the first pause between attempts; pauses double up to
	// MaxBackoff, with jitter. Defaults 20ms and 1s.
	Backoff, MaxBackoff time.Duration
	// Clock paces decisions and retries. Default the real clock.
	Clock clock.Clock
	// Logger receives dropped and rejected callbacks (as errors) and
	// retries (debug). Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Delay == 0 {
		c.Delay = 50 * time.Millisecond
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 100
	}
	if c.MaxElapsed == 0 {
		c.MaxElapsed = 2 * time.Minute
	}
	if c.Backoff == 0 {
		c.Backoff = 20 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the configuration (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	u, err := url.Parse(c.CallbackURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bank: callback URL %q (want http://host:port): %w", c.CallbackURL, ErrBadConfig)
	}
	if c.FailureRate < 0 || c.FailureRate > 1 {
		return fmt.Errorf("bank: failure rate %v (want 0 to 1): %w", c.FailureRate, ErrBadConfig)
	}
	if c.MaxAttempts < 1 || c.MaxElapsed < 0 || c.Backoff < 0 || c.MaxBackoff < c.Backoff {
		return fmt.Errorf("bank: MaxAttempts %d, MaxElapsed %v, Backoff %v, MaxBackoff %v: %w", c.MaxAttempts, c.MaxElapsed, c.Backoff, c.MaxBackoff, ErrBadConfig)
	}
	return nil
}

// Op is the bank's record of one operation.
type Op struct {
	ID        string    `json:"opId"`
	Kind      string    `json:"kind"`
	Amount    int64     `json:"amount"`
	Status    string    `json:"status"` // StatusPending until decided
	BankRef   string    `json:"bankRef,omitempty"`
	Submitted time.Time `json:"submitted"`
	Decided   time.Time `json:"decided,omitzero"`
	Delivery  string    `json:"delivery"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"lastError,omitempty"`
	// Cell is the cell that acknowledged the callback.
	Cell string `json:"cell,omitempty"`
}

// Totals are the bank's books. Deposits and Payouts count what the bank
// decided; the Delivered ones only what a cell acknowledged, which is what
// the cells' books must match once every callback is delivered.
type Totals struct {
	Ops               int   `json:"ops"`
	Deposits          int64 `json:"deposits"` // top-ups that succeeded
	Payouts           int64 `json:"payouts"`  // withdrawals paid out
	DeliveredDeposits int64 `json:"deliveredDeposits"`
	DeliveredPayouts  int64 `json:"deliveredPayouts"`
	Undecided         int   `json:"undecided"`
	Delivering        int   `json:"delivering"`
	Delivered         int   `json:"delivered"`
	Rejected          int   `json:"rejected"`
	Dropped           int   `json:"dropped"`
}

// Bank is a virtual bank channel: it takes top-ups and withdrawals,
// decides each after a delay and delivers the outcome by HTTP callback,
// retrying until a cell acknowledges it. It is safe for concurrent use.
type Bank struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	ops     map[string]*Op
	order   []string // submission order
	timers  map[string]clock.Timer
	closed  bool
	changed chan struct{} // closed and replaced on every state change
}

// New returns a bank; Close stops it.
func New(cfg Config) (*Bank, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.CallbackURL = strings.TrimSuffix(cfg.CallbackURL, "/")
	b := &Bank{cfg: cfg, log: cfg.Logger.With("component", "bank"), ops: map[string]*Op{}, timers: map[string]clock.Timer{}, changed: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// CheckOp reports whether an operation can be submitted.
func CheckOp(opID, kind string, amount int64) error {
	if opID == "" || len(opID) > 64 || strings.ContainsAny(opID, "/?# \t\r\n") {
		return fmt.Errorf("bank: operation ID %q (want 1-64 characters, no / ? # or spaces): %w", opID, ErrBadOp)
	}
	if kind != KindTopUp && kind != KindWithdraw {
		return fmt.Errorf("bank: kind %q (want %q or %q): %w", kind, KindTopUp, KindWithdraw, ErrBadOp)
	}
	if amount <= 0 {
		return fmt.Errorf("bank: amount %d (want > 0): %w", amount, ErrBadOp)
	}
	return nil
}

// Submit takes an operation. It is idempotent by opID: submitting a known
// operation again with the same kind and amount is accepted (and restarts
// the delivery of a callback that was dropped or rejected); with another
// kind or amount it is ErrConflict. It never blocks on the network.
func (b *Bank) Submit(_ context.Context, opID, kind string, amount int64) error {
	if err := CheckOp(opID, kind, amount); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if op, ok := b.ops[opID]; ok {
		if op.Kind != kind || op.Amount != amount {
			return fmt.Errorf("bank: %s is a %s of %d, not a %s of %d: %w", opID, op.Kind, op.Amount, kind, amount, ErrConflict)
		}
		if op.Delivery == DeliveryDropped || op.Delivery == DeliveryRejected {
			b.startDelivery(op)
		}
		return nil
	}
	op := &Op{ID: opID, Kind: kind, Amount: amount, Status: StatusPending, Submitted: b.cfg.Clock.Now()}
	b.ops[opID] = op
	b.order = append(b.order, opID)
	b.notify()
	if b.cfg.Delay < 0 {
		b.decide(op)
		return nil
	}
	b.wg.Add(1)
	b.timers[opID] = b.cfg.Clock.AfterFunc(b.cfg.Delay, func() {
		defer b.wg.Done()
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.timers, opID)
		if !b.closed {
			b.decide(op)
		}
	})
	return nil
}

// outcome is an operation's deterministic fate.
func (b *Bank) outcome(opID string) (status, ref string) {
	h := fnv.New64a()
	var seed [8]byte
	for i := range seed {
		seed[i] = byte(b.cfg.Seed >> (8 * i))
	}
	h.Write(seed[:])
	h.Write([]byte(opID))
	sum := h.Sum64()
	status = StatusSucceeded
	if float64(sum>>11)/(1<<53) < b.cfg.FailureRate {
		status = StatusFailed
	}
	return status, fmt.Sprintf("bank-%016x", sum)
}

// decide settles an operation's outcome and starts delivering it. b.mu held.
func (b *Bank) decide(op *Op) {
	op.Status, op.BankRef = b.outcome(op.ID)
	op.Decided = b.cfg.Clock.Now()
	b.startDelivery(op)
}

// startDelivery sends op's callback in the background. b.mu held.
func (b *Bank) startDelivery(op *Op) {
	op.Delivery, op.Attempts, op.LastError = DeliveryInProgress, 0, ""
	b.notify()
	b.wg.Add(1)
	go b.deliver(op.ID, op.Status, op.BankRef)
}

func (b *Bank) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// deliver posts the callback until a cell acknowledges it (200), answers a
// final 4xx, or attempts or time run out.
func (b *Bank) deliver(opID, status, ref string) {
	defer b.wg.Done()
	start := b.cfg.Clock.Now()
	body, _ := json.Marshal(map[string]string{"status": status, "bankRef": ref})
	pause := b.cfg.Backoff
	for attempt := 1; ; attempt++ {
		code, cell, err := b.post(opID, body)
		final, outcome := "", ""
		switch {
		case err == nil && code == http.StatusOK:
			final = DeliveryDone
		case err == nil && code >= 400 && code < 500 && !retryStatus(code):
			final, outcome = DeliveryRejected, fmt.Sprintf("HTTP %d", code)
		case err != nil:
			outcome = err.Error()
		default:
			outcome = fmt.Sprintf("HTTP %d", code)
		}
		elapsed := b.cfg.Clock.Now().Sub(start)
		if final == "" && (attempt >= b.cfg.MaxAttempts || elapsed >= b.cfg.MaxElapsed || b.ctx.Err() != nil) {
			final = DeliveryDropped
		}
		b.mu.Lock()
		op := b.ops[opID]
		op.Attempts = attempt
		op.LastError = outcome
		if final != "" {
			op.Delivery = final
			if final == DeliveryDone {
				op.Cell = cell
			}
			b.notify()
		}
		b.mu.Unlock()
		switch final {
		case DeliveryDone:
			return
		case DeliveryRejected:
			b.log.Error("callback rejected; not retrying", "op", opID, "status", status, "reply", outcome, "attempts", attempt)
			return
		case DeliveryDropped:
			b.log.Error("callback dropped; Submit the operation again to redeliver", "op", opID, "status", status, "last", outcome, "attempts", attempt, "elapsed", elapsed)
			return
		}
		b.log.Debug("callback not delivered; retrying", "op", opID, "attempt", attempt, "reply", outcome)
		d := pause/2 + rand.N(pause/2+1)
		pause = min(2*pause, b.cfg.MaxBackoff)
		t := b.cfg.Clock.NewTimer(d)
		select {
		case <-t.C():
		case <-b.ctx.Done():
			t.Stop()
		}
	}
}

// retryStatus reports the 4xx answers worth retrying: 421 (a cell that no
// longer owns the operation's key: the router routes again) and the
// transient 408 and 429. Every 5xx (503: frozen, fenced) is retried too.
func retryStatus(code int) bool {
	switch code {
	case http.StatusMisdirectedRequest, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	}
	return false
}

func (b *Bank) post(opID string, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	u := b.cfg.CallbackURL + fmt.Sprintf(CallbackPath, url.PathEscape(opID))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.IdempotencyMD, opID)
	resp, err := b.cfg.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var reply struct {
		Cell string `json:"cell"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(data, &reply)
	return resp.StatusCode, reply.Cell, nil
}

// Op returns one operation.
func (b *Bank) Op(opID string) (Op, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, ok := b.ops[opID]
	if !ok {
		return Op{}, false
	}
	return *op, true
}

// Ops returns every operation in submission order.
func (b *Bank) Ops() []Op {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Op, 0, len(b.order))
	for _, id := range b.order {
		out = append(out, *b.ops[id])
	}
	return out
}

// Totals sums the books.
func (b *Bank) Totals() Totals {
	b.mu.Lock()
	defer b.mu.Unlock()
	var t Totals
	for _, op := range b.ops {
		t.Ops++
		if op.Status == StatusPending {
			t.Undecided++
			continue
		}
		delivered := op.Delivery == DeliveryDone
		if op.Status == StatusSucceeded {
			switch op.Kind {
			case KindTopUp:
				t.Deposits += op.Amount
				if delivered {
					t.DeliveredDeposits += op.Amount
				}
			case KindWithdraw:
				t.Payouts += op.Amount
				if delivered {
					t.DeliveredPayouts += op.Amount
				}
			}
		}
		switch op.Delivery {
		case DeliveryInProgress:
			t.Delivering++
		case DeliveryDone:
			t.Delivered++
		case DeliveryRejected:
			t.Rejected++
		case DeliveryDropped:
			t.Dropped++
		}
	}
	return t
}

// Undelivered returns the operations decided but not acknowledged by a
// cell (rejected or dropped), for reports.
func (b *Bank) Undelivered() []Op {
	var out []Op
	for _, op := range b.Ops() {
		if op.Delivery == DeliveryRejected || op.Delivery == DeliveryDropped {
			out = append(out, op)
		}
	}
	return out
}

// Redeliver restarts the delivery of every dropped or rejected callback and
// returns how many.
func (b *Bank) Redeliver() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0
	}
	n := 0
	for _, id := range b.order {
		if op := b.ops[id]; op.Delivery == DeliveryDropped || op.Delivery == DeliveryRejected {
			b.startDelivery(op)
			n++
		}
	}
	return n
}

// Quiet waits until every operation is decided and no callback is being
// delivered (each delivered, rejected or dropped), or ctx ends.
func (b *Bank) Quiet(ctx context.Context) error {
	for {
		b.mu.Lock()
		busy := slices.ContainsFunc(b.order, func(id string) bool {
			op := b.ops[id]
			return op.Status == StatusPending || op.Delivery == DeliveryInProgress
		})
		ch := b.changed
		b.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Close stops the bank: undecided operations stay undecided, callbacks
// being delivered are dropped after their current attempt. It waits for
// the background work to stop.
func (b *Bank) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for id, t := range b.timers {
		if t.Stop() {
			b.wg.Done() // the timer's function will not run
		}
		delete(b.timers, id)
	}
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
