package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Generator. Zero values mean the defaults.
type Config struct {
	// BaseURL is cellrouter's HTTP address, e.g. "http://127.0.0.1:8080".
	// Required.
	BaseURL string
	// HTTP is the client. Default: a client with keep-alives for Workers
	// connections.
	HTTP *http.Client
	// Users are the payers' keys. Required.
	Users []string
	// Merchants are the payees. Default m-1..m-4.
	Merchants []string
	// Workers is the number of concurrent payers. Default 8.
	Workers int
	// Rate caps operations per second over all workers; 0 means as fast
	// as the workers go.
	Rate float64
	// InitialBalance is each user's top-up at Setup, in cents.
	// Default 10,000,000.
	InitialBalance int64
	// MaxAmount is the largest payment, in cents. Default 500.
	MaxAmount int64
	// RefundEvery makes every Nth payment followed by a partial refund;
	// 0 means never. Default 10.
	RefundEvery int
	// BankEvery makes every Nth operation a small top-up or withdrawal
	// through the bank instead of a payment; 0 means never. Default 25.
	BankEvery int
	// OpTimeout bounds one operation with all its retries. Default 15s.
	OpTimeout time.Duration
	// RunID prefixes request IDs, so two runs never share one. Default:
	// derived from the start time.
	RunID string
	// Seed makes the choice of users and amounts repeatable. Default 1.
	Seed uint64
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.BaseURL == "":
		return errors.New("load: BaseURL is required")
	case len(c.Users) == 0:
		return errors.New("load: at least one user is required")
	case c.Workers < 0, c.Rate < 0, c.InitialBalance < 0, c.MaxAmount < 0, c.RefundEvery < 0, c.BankEvery < 0, c.OpTimeout < 0:
		return errors.New("load: negative setting")
	}
	if _, err := url.Parse(c.BaseURL); err != nil {
		return fmt.Errorf("load: BaseURL: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if len(c.Merchants) == 0 {
		c.Merchants = []string{"m-1", "m-2", "m-3", "m-4"}
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.InitialBalance == 0 {
		c.InitialBalance = 10_000_000
	}
	if c.MaxAmount == 0 {
		c.MaxAmount = 500
	}
	if c.RefundEvery == 0 {
		c.RefundEvery = 10
	}
	if c.BankEvery == 0 {
		c.BankEvery = 25
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 15 * time.Second
	}
	if c.RunID == "" {
		c.RunID = strconv.FormatInt(time.Now().UnixMilli()%1e9, 36)
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.HTTP == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = c.Workers * 2
		c.HTTP = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
}

// Op names an operation kind.
type Op string

// Operations.
const (
	OpOpen     Op = "open"
	OpOrder    Op = "order"
	OpPay      Op = "pay"
	OpRefund   Op = "refund"
	OpTopUp    Op = "topup"
	OpWithdraw Op = "withdraw"
)

// Ack is one acknowledged write: the server answered 200, so the app told
// its user it happened. The invariant checker looks for each one.
type Ack struct {
	Op        Op        `json:"op"`
	RequestID string    `json:"requestId"`
	Owner     string    `json:"owner"`
	Ref       string    `json:"ref,omitempty"` // order or bank op ID
	TxnID     string    `json:"txnId,omitempty"`
	Merchant  string    `json:"merchant,omitempty"`
	Amount    int64     `json:"amount"`
	Cell      string    `json:"cell"`
	Started   time.Time `json:"started"` // when the operation began (its first attempt)
	At        time.Time `json:"at"`      // when it was acknowledged
}

// Trouble is one attempt that did not succeed: retried (network error, 421,
// 503, 5xx) or failed for good. Drills find the time to detect in them.
type Trouble struct {
	At     time.Time `json:"at"`
	Owner  string    `json:"owner"`
	Reason string    `json:"reason"` // HTTP status, "network" or "failed"
}

// maxTroubles bounds the trouble log.
const maxTroubles = 200_000

// Failure is an operation that did not succeed after every retry.
type Failure struct {
	Op        Op        `json:"op"`
	RequestID string    `json:"requestId"`
	Owner     string    `json:"owner"`
	Err       string    `json:"error"`
	At        time.Time `json:"at"`
}

// Second is one second of the run.
type Second struct {
	At       time.Time `json:"at"`
	OK       int       `json:"ok"`       // payments acknowledged
	Declined int       `json:"declined"` // refused by the business (funds)
	Failed   int       `json:"failed"`   // operations failed after all retries
	Retries  int       `json:"retries"`  // attempts retried
}

// Stats is a snapshot of a run.
type Stats struct {
	Started    time.Time        `json:"started"`
	Elapsed    time.Duration    `json:"elapsed"`
	Payments   int              `json:"payments"` // acknowledged payments
	Ops        map[Op]int       `json:"ops"`      // acknowledged operations by kind
	Declined   int              `json:"declined"`
	Failed     int              `json:"failed"`
	Retries    int              `json:"retries"`
	RetriedBy  map[string]int   `json:"retriedBy"` // reason (HTTP status or "network") -> attempts
	Latency    LatencySummary   `json:"latency"`   // order+pay, per acknowledged payment
	PerSecond  []Second         `json:"perSecond"`
	Throughput float64          `json:"throughput"` // acknowledged payments per second
	Failures   []Failure        `json:"failures,omitempty"`
	Extra      map[string]int64 `json:"extra,omitempty"`
}

// LatencySummary summarizes latencies.
type LatencySummary struct {
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// Generator runs the load.
type Generator struct {
	cfg Config

	seq     atomic.Int64
	mu      sync.Mutex
	started time.Time
	stopped time.Time
	acks    []Ack
	fails   []Failure
	ops     map[Op]int
	retried map[string]int
	lat     []time.Duration
	secs    []Second
	decl    int
	trouble []Trouble
}

// New returns a generator for cfg.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Generator{cfg: cfg, ops: map[Op]int{}, retried: map[string]int{}}, nil
}

// Config returns the configuration with defaults applied.
func (g *Generator) Config() Config { return g.cfg }

// Setup opens every user's account and tops it up with InitialBalance,
// then waits until the bank's callbacks have credited every account (or
// ctx ends).
func (g *Generator) Setup(ctx context.Context) error {
	sem := make(chan struct{}, g.cfg.Workers)
	errs := make(chan error, len(g.cfg.Users))
	var wg sync.WaitGroup
	for _, u := range g.cfg.Users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := g.call(ctx, OpOpen, u, "/v1/users/"+url.PathEscape(u)+"/open", map[string]any{"requestId": g.reqID("open", u)}); err != nil {
				errs <- fmt.Errorf("open %s: %w", u, err)
				return
			}
			if _, err := g.call(ctx, OpTopUp, u, "/v1/users/"+url.PathEscape(u)+"/topups", map[string]any{"requestId": g.reqID("seed", u), "amount": g.cfg.InitialBalance}); err != nil {
				errs <- fmt.Errorf("top up %s: %w", u, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(slices.Collect(chanSeq(errs))...); err != nil {
		return err
	}
	// The bank credits asynchronously; wait for every account.
	for _, u := range g.cfg.Users {
		for {
			bal, err := g.Balance(ctx, u)
			if err == nil && bal >= g.cfg.InitialBalance/2 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("load: waiting for %s's top-up: %w", u, context.Cause(ctx))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func chanSeq[T any](c <-chan T) func(func(T) bool) {
	return func(yield func(T) bool) {
		for v := range c {
			if !yield(v) {
				return
			}
		}
	}
}

func (g *Generator) reqID(kind, s string) string {
	return fmt.Sprintf("%s-%s-%s-%d", g.cfg.RunID, kind, s, g.seq.Add(1))
}

// Run pays until ctx ends, then returns the run's statistics.
func (g *Generator) Run(ctx context.Context) Stats {
	g.mu.Lock()
	g.started = time.Now()
	g.mu.Unlock()
	var tick <-chan time.Time
	if g.cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / g.cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	for w := range g.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(g.cfg.Seed, uint64(w)))
			for n := 1; ; n++ {
				if tick != nil {
					select {
					case <-ctx.Done():
						return
					case <-tick:
					}
				}
				if ctx.Err() != nil {
					return
				}
				g.one(ctx, rng, n)
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	g.stopped = time.Now()
	g.mu.Unlock()
	return g.Stats()
}

// one runs one operation. Operations started before ctx ended run to
// their own deadline: an app does not abandon a payment half-way.
func (g *Generator) one(ctx context.Context, rng *rand.Rand, n int) {
	octx := context.WithoutCancel(ctx)
	user := g.cfg.Users[rng.IntN(len(g.cfg.Users))]
	amount := 1 + rng.Int64N(g.cfg.MaxAmount)
	if g.cfg.BankEvery > 0 && n%g.cfg.BankEvery == 0 {
		op, path := OpTopUp, "/topups"
		if rng.IntN(2) == 0 {
			op, path = OpWithdraw, "/withdrawals"
		}
		g.call(octx, op, user, "/v1/users/"+url.PathEscape(user)+path, map[string]any{"requestId": g.reqID(string(op), user), "amount": amount})
		return
	}
	start := time.Now()
	merchant := g.cfg.Merchants[rng.IntN(len(g.cfg.Merchants))]
	res, err := g.call(octx, OpOrder, user, "/v1/users/"+url.PathEscape(user)+"/orders",
		map[string]any{"requestId": g.reqID("order", user), "merchant": merchant, "amount": amount})
	if err != nil {
		return
	}
	orderID, _ := res["orderId"].(string)
	if orderID == "" {
		g.fail(OpOrder, "", user, errors.New("reply without orderId"))
		return
	}
	res, err = g.call(octx, OpPay, user, "/v1/orders/"+url.PathEscape(orderID)+"/pay", map[string]any{"requestId": g.reqID("pay", user), "_merchant": merchant, "_amount": amount})
	if err != nil {
		return
	}
	g.mu.Lock()
	g.lat = append(g.lat, time.Since(start))
	g.mu.Unlock()
	if g.cfg.RefundEvery > 0 && n%g.cfg.RefundEvery == 0 {
		part := max(1, amount/2)
		g.call(octx, OpRefund, user, "/v1/orders/"+url.PathEscape(orderID)+"/refund", map[string]any{"requestId": g.reqID("refund", user), "amount": part})
	}
	_ = res
}

// Balance reads a user's balance through the router.
func (g *Generator) Balance(ctx context.Context, user string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.BaseURL+"/v1/users/"+url.PathEscape(user)+"/balance", nil)
	if err != nil {
		return 0, err
	}
	resp, err := g.cfg.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Balance int64 `json:"balance"`
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("load: balance of %s: HTTP %d", user, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	return out.Balance, nil
}

// StatusError is an answer the generator does not retry.
type StatusError struct {
	Status int
	Code   string
	Msg    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg)
}

// retryable reports whether an answer may be retried with the same
// request ID: the request may not have been served, or was refused by a
// guard or the router (wrong cell, frozen, fenced, overloaded).
func retryable(status int) bool {
	return status == http.StatusMisdirectedRequest || status == http.StatusServiceUnavailable ||
		status == http.StatusTooManyRequests || status >= 500
}

// call POSTs body to path until it is answered for good or the operation's
// deadline passes, and records the outcome.
func (g *Generator) call(ctx context.Context, op Op, owner, path string, body map[string]any) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	defer cancel()
	// Fields starting with "_" are for the log only.
	send := map[string]any{}
	for k, v := range body {
		if k[0] != '_' {
			send[k] = v
		}
	}
	raw, _ := json.Marshal(send)
	reqID, _ := body["requestId"].(string)
	began := time.Now()
	backoff := 20 * time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				g.fail(op, reqID, owner, fmt.Errorf("gave up after %d attempts: %w", attempt, last))
				return nil, last
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 500*time.Millisecond)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.BaseURL+path, bytes.NewReader(raw))
		if err != nil {
			g.fail(op, reqID, owner, err)
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := g.cfg.HTTP.Do(req)
		if err != nil {
			last = err
			g.retry(owner, "network")
			continue
		}
		data, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr != nil {
			last = rerr
			g.retry(owner, "network")
			continue
		}
		if retryable(resp.StatusCode) {
			last = &StatusError{Status: resp.StatusCode, Code: resp.Header.Get("Cellkit-Code"), Msg: string(bytes.TrimSpace(data))}
			g.retry(owner, strconv.Itoa(resp.StatusCode))
			continue
		}
		var out map[string]any
		if err := json.Unmarshal(data, &out); err != nil {
			err = fmt.Errorf("HTTP %d with a reply that is not JSON: %q", resp.StatusCode, data)
			g.fail(op, reqID, owner, err)
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			code, _ := out["code"].(string)
			msg, _ := out["error"].(string)
			se := &StatusError{Status: resp.StatusCode, Code: code, Msg: msg}
			if code == "INSUFFICIENT_FUNDS" {
				g.mu.Lock()
				g.decl++
				g.second(time.Now()).Declined++
				g.mu.Unlock()
				return nil, se
			}
			g.fail(op, reqID, owner, se)
			return nil, se
		}
		g.ack(op, reqID, owner, began, body, out)
		return out, nil
	}
}

func (g *Generator) ack(op Op, reqID, owner string, began time.Time, body, out map[string]any) {
	a := Ack{Op: op, RequestID: reqID, Owner: owner, Started: began, At: time.Now()}
	a.Cell, _ = out["cell"].(string)
	a.TxnID, _ = out["txnId"].(string)
	switch op {
	case OpPay:
		a.Ref, _ = out["orderId"].(string)
		a.Merchant, _ = body["_merchant"].(string)
		a.Amount, _ = body["_amount"].(int64)
	case OpRefund:
		a.Ref, _ = out["orderId"].(string)
		a.Amount, _ = body["amount"].(int64)
	case OpTopUp, OpWithdraw:
		a.Ref, _ = out["opId"].(string)
		a.Amount, _ = body["amount"].(int64)
	case OpOrder:
		a.Ref, _ = out["orderId"].(string)
		a.Amount, _ = body["amount"].(int64)
		a.Merchant, _ = body["merchant"].(string)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ops[op]++
	if op != OpOpen && op != OpOrder {
		g.acks = append(g.acks, a)
	}
	if op == OpPay {
		g.second(a.At).OK++
	}
}

func (g *Generator) fail(op Op, reqID, owner string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.fails = append(g.fails, Failure{Op: op, RequestID: reqID, Owner: owner, Err: err.Error(), At: now})
	g.second(now).Failed++
	g.troubleLocked(now, owner, "failed")
}

func (g *Generator) retry(owner, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.retried[reason]++
	g.second(now).Retries++
	g.troubleLocked(now, owner, reason)
}

func (g *Generator) troubleLocked(at time.Time, owner, reason string) {
	if len(g.trouble) < maxTroubles {
		g.trouble = append(g.trouble, Trouble{At: at, Owner: owner, Reason: reason})
	}
}

// Troubles returns the attempts that did not succeed, in order (at most
// the first 200,000).
func (g *Generator) Troubles() []Trouble {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.trouble)
}

// second returns the bucket of t; g.mu is held.
func (g *Generator) second(t time.Time) *Second {
	if g.started.IsZero() {
		g.started = t
	}
	i := int(t.Sub(g.started) / time.Second)
	if i < 0 {
		i = 0
	}
	for len(g.secs) <= i {
		g.secs = append(g.secs, Second{At: g.started.Add(time.Duration(len(g.secs)) * time.Second)})
	}
	return &g.secs[i]
}

// Acks returns every acknowledged write so far, in order.
func (g *Generator) Acks() []Ack {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.acks)
}

// Stats returns a snapshot of the run.
func (g *Generator) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Stats{Started: g.started, Ops: map[Op]int{}, RetriedBy: map[string]int{}, Declined: g.decl,
		Failed: len(g.fails), Failures: slices.Clone(g.fails), PerSecond: slices.Clone(g.secs)}
	end := g.stopped
	if end.IsZero() {
		end = time.Now()
	}
	if !g.started.IsZero() {
		s.Elapsed = end.Sub(g.started)
	}
	for k, v := range g.ops {
		s.Ops[k] = v
	}
	for k, v := range g.retried {
		s.RetriedBy[k] = v
		s.Retries += v
	}
	s.Payments = g.ops[OpPay]
	if s.Elapsed > 0 {
		s.Throughput = float64(s.Payments) / s.Elapsed.Seconds()
	}
	lat := slices.Clone(g.lat)
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		s.Latency = LatencySummary{P50: lat[n/2], P99: lat[min(n-1, n*99/100)], Max: lat[n-1]}
	}
	return s
}
