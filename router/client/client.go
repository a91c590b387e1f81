package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// Scheme is the gRPC target scheme the client's resolver serves:
// "cellkit:///<service>".
const Scheme = "cellkit"

// Client routes calls to the cell that owns their key: a gRPC resolver and
// balancer (DialOptions, Dial), interceptors that handle guard refusals, and
// an HTTP Transport. It holds the per-cell circuit breakers and the metrics.
// One Client may serve many connections and transports; it is safe for
// concurrent use and needs no Close (connections stop their own
// goroutines when closed).
type Client struct {
	cfg     Config
	w       *router.Watcher
	clock   clock.Clock
	m       *metrics
	created time.Time

	cellsMu sync.Mutex
	cells   atomic.Pointer[map[string]*cellState]

	epochS  atomic.Pointer[epochString]
	httpIdx atomic.Pointer[httpIndex]
}

// New returns a client for cfg. Its metrics are registered with reg (nil:
// not registered); give each Client its own Registerer
// (prometheus.WrapRegistererWith) if a process has several.
func New(cfg Config, reg prometheus.Registerer) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	c := &Client{cfg: cfg, w: cfg.Watcher, clock: cfg.Clock}
	c.created = c.clock.Now()
	empty := map[string]*cellState{}
	c.cells.Store(&empty)
	c.m = newMetrics(c)
	if err := c.m.register(reg); err != nil {
		return nil, err
	}
	return c, nil
}

// Config returns the configuration in use, defaults applied.
func (c *Client) Config() Config { return c.cfg }

// Table returns the table the client routes by now.
func (c *Client) Table() *router.Table { return c.w.Table() }

// Stale reports whether the map source has gone unheard for longer than
// MaxStaleness. The client keeps routing on its last good table meanwhile;
// guards refuse whatever that table gets wrong. Always false without
// Config.Contact.
func (c *Client) Stale() bool {
	if c.cfg.Contact == nil {
		return false
	}
	return c.ContactAge() > c.cfg.MaxStaleness
}

// ContactAge is the time since the map source was last heard from (since
// the client was created if never); 0 without Config.Contact.
func (c *Client) ContactAge() time.Duration {
	if c.cfg.Contact == nil {
		return 0
	}
	last := c.cfg.Contact.LastContact()
	if last.IsZero() {
		last = c.created
	}
	return max(c.clock.Now().Sub(last), 0)
}

// DialOptions are what a connection needs to route by key: the "cellkit"
// resolver (instances from Discovery, tagged with their cell), the cellkit
// balancer, and the unary and stream interceptors. Transport credentials
// are up to the caller.
func (c *Client) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithResolvers(c.ResolverBuilder()),
		grpc.WithDefaultServiceConfig(serviceConfigJSON),
		grpc.WithChainUnaryInterceptor(c.UnaryInterceptor()),
		grpc.WithChainStreamInterceptor(c.StreamInterceptor()),
	}
}

// Dial returns a connection to service ("cellkit:///<service>") with
// DialOptions, insecure transport credentials unless opts set others, and
// opts. Use the service's generated stubs on it unchanged; every call's
// context needs WithKey.
func (c *Client) Dial(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.DialOptions()...)
	return grpc.NewClient(Scheme+":///"+service, append(all, opts...)...)
}

// cellState is what the client keeps per cell: its breaker and counters.
type cellState struct {
	id string
	br *gobreaker.TwoStepCircuitBreaker[struct{}] // nil when breakers are off
	// clean: the breaker is closed with no failure counted since its last
	// success. A success then changes nothing the breaker decides by
	// (consecutive failures), so attempts skip it (two locks, two clock
	// reads and an allocation per call) until one fails.
	clean atomic.Bool
	// The cell's series of cellkit_client_inflight and, by outcome,
	// cellkit_client_requests_total, exported by cellCollector: plain
	// atomics beside the breaker state every attempt reads anyway. On
	// client_golang's gauge and counter (objects of their own; the gauge
	// a compare-and-swap loop) an attempt's three updates cost a few
	// hundred ns of a live call in cache misses (BenchmarkInterceptorLive).
	inflight atomic.Int64
	out      [numOutcomes]atomic.Uint64
	created  time.Time // the counters' creation time, for the exposition
}

// admit asks the cell's breaker whether an attempt may go.
func (cs *cellState) admit() (done func(error), err error) {
	if cs.br == nil || cs.clean.Load() {
		return nil, nil
	}
	return cs.br.Allow()
}

// record tells the breaker how an attempt went; done is what admit returned.
func (cs *cellState) record(done func(error), h health) {
	if cs.br == nil {
		return
	}
	if done == nil { // admitted on the clean path
		if h != unhealth {
			return
		}
		cs.clean.Store(false)
		if d, err := cs.br.Allow(); err == nil {
			d(errUnhealthy)
		}
		return
	}
	done(h.breakerErr())
	if h == healthy && cs.br.State() == gobreaker.StateClosed && cs.br.Counts().ConsecutiveFailures == 0 {
		cs.clean.Store(true)
	}
}

func (c *Client) cell(id string) *cellState {
	if cs := (*c.cells.Load())[id]; cs != nil {
		return cs
	}
	c.cellsMu.Lock()
	defer c.cellsMu.Unlock()
	m := *c.cells.Load()
	if cs := m[id]; cs != nil {
		return cs
	}
	cs := &cellState{id: id, created: time.Now()}
	if b := c.cfg.Breaker; !b.Disabled {
		gauge := c.m.breakerState.WithLabelValues(id)
		gauge.Set(0)
		cs.br = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:          id,
			MaxRequests:   b.HalfOpenRequests,
			Interval:      b.Interval,
			Timeout:       b.OpenTimeout,
			ReadyToTrip:   func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= b.ConsecutiveFailures },
			OnStateChange: func(_ string, _, to gobreaker.State) { gauge.Set(breakerGauge(to)) },
			IsSuccessful:  func(err error) bool { return err == nil },
			IsExcluded:    func(err error) bool { return err == errIgnored },
		})
	}
	nm := maps.Clone(m)
	nm[id] = cs
	c.cells.Store(&nm)
	return cs
}

// BreakerState returns the state of cell's breaker (closed if it has none yet).
func (c *Client) BreakerState(cell string) gobreaker.State {
	if cs := (*c.cells.Load())[cell]; cs != nil && cs.br != nil {
		return cs.br.State()
	}
	return gobreaker.StateClosed
}

type epochString struct {
	e uint64
	s string
}

// epochString formats e, cached: the epoch changes rarely.
func (c *Client) epochString(e uint64) string {
	if p := c.epochS.Load(); p != nil && p.e == e {
		return p.s
	}
	s := strconv.FormatUint(e, 10)
	c.epochS.Store(&epochString{e, s})
	return s
}

// --- the routing loop, shared by gRPC and HTTP ---

// health is what an attempt says about its cell, for the breaker.
type health uint8

const (
	healthy  health = iota // the cell answered (guard refusals included)
	unhealth               // Unavailable, DeadlineExceeded, transport errors
	ignored                // the caller gave up, or nothing was sent
)

var (
	errUnhealthy = errors.New("cell failed")
	errIgnored   = errors.New("not counted")
)

func (h health) breakerErr() error {
	switch h {
	case unhealth:
		return errUnhealthy
	case ignored:
		return errIgnored
	}
	return nil
}

// target is where one attempt goes.
type target struct {
	cell  *cellState
	epoch uint64 // stamped as cellkit-epoch
	done  func(error)
}

func (tg target) finish(h health) {
	tg.cell.inflight.Add(-1)
	tg.cell.record(tg.done, h)
}

// result is how one attempt went, as its transport saw it.
type result struct {
	err      error  // what the call returns if it ends here
	refusal  error  // the typed guard refusal (cell.CodeOf != ""), else nil
	health   health // for the breaker
	rerouted bool   // not sent: the map moved the key while the pick waited
	final    bool   // must not be retried (a request body that cannot be replayed)
}

// routing is the state of one call across its attempts.
type routing struct {
	c     *Client
	key   string
	write bool // only writes wait for a freeze the table shows: the owner still serves reads
	t     *router.Table

	hintCell  string // owner named by a WRONG_CELL refusal our map had not reached
	hintEpoch uint64

	attempts, redirects, frozens, stales int
	frozenWaited                         time.Duration
}

func (c *Client) newRouting(key string, write bool) routing {
	return routing{c: c, key: key, write: write, t: c.w.Table()}
}

// next returns where the next attempt goes: the key's owner in the current
// table (for a write, after waiting out a freeze the table shows), or a
// refusal's hint.
// The owner's breaker must let it through.
func (r *routing) next(ctx context.Context) (target, error) {
	var tg target
	if r.hintCell != "" {
		tg = target{cell: r.c.cell(r.hintCell), epoch: r.hintEpoch}
		r.hintCell = ""
	} else {
		for {
			rt := r.t.Lookup(r.key)
			if rt.Frozen && r.write {
				if err := r.waitFlip(ctx, r.t.Epoch()); err != nil {
					return target{}, err
				}
				continue
			}
			if rt.Cell == nil {
				return target{}, fmt.Errorf("cellkit client: key %q at epoch %d: %w", r.key, r.t.Epoch(), ErrNoOwner)
			}
			tg = target{cell: r.c.cell(rt.Cell.ID), epoch: r.t.Epoch()}
			break
		}
	}
	done, err := tg.cell.admit()
	if err != nil {
		tg.cell.out[outBreakerOpen].Add(1)
		return target{}, &CellUnavailableError{Cell: tg.cell.id, Err: err}
	}
	tg.done = done
	tg.cell.inflight.Add(1)
	return tg, nil
}

// after records an attempt and decides whether the call tries again; if
// not, it returns what the call returns.
func (r *routing) after(ctx context.Context, tg target, res result) (retry bool, err error) {
	r.attempts++
	code := cell.CodeOf(res.refusal)
	tg.cell.out[outcomeOf(res, code)].Add(1)
	if code == "" && !res.rerouted {
		return false, res.err // answered, or failed in a way no retry mends
	}
	pol := r.c.cfg.Retry
	if r.attempts >= pol.maxAttempts() || res.final {
		return false, res.err
	}
	if res.rerouted {
		r.t = r.c.w.Table()
		return true, nil
	}
	switch code {
	case cell.CodeWrongCell:
		var wc *cell.WrongCellError
		if !errors.As(res.refusal, &wc) {
			return false, res.err
		}
		if r.redirects++; r.redirects > pol.MaxRedirects {
			return false, res.err
		}
		t, werr := r.c.waitTable(ctx, pol.RedirectWait, errRedirectWait, func(t *router.Table) bool { return t.Epoch() >= wc.Epoch })
		if werr == nil {
			r.t = t
			r.c.m.redirects.WithLabelValues("wrong_cell").Inc()
			return true, nil
		}
		if ctx.Err() != nil || wc.Owner == "" || wc.Owner == tg.cell.id {
			return false, res.err
		}
		// Our map is behind the guard's and did not catch up in time: go
		// to the owner the refusal names, with its epoch; that owner's
		// guard decides again from its own map.
		r.t = r.c.w.Table()
		r.hintCell, r.hintEpoch = wc.Owner, max(wc.Epoch, r.t.Epoch())
		r.c.m.redirects.WithLabelValues("wrong_cell_hint").Inc()
		return true, nil
	case cell.CodeFrozen:
		var fz *cell.FrozenError
		if !errors.As(res.refusal, &fz) {
			return false, res.err
		}
		if r.frozens++; r.frozens > pol.MaxFrozenRetries {
			return false, res.err
		}
		if err := r.waitFlip(ctx, max(fz.Epoch, tg.epoch)); err != nil {
			return false, err
		}
		return true, nil
	case cell.CodeStaleMap:
		var sm *cell.StaleMapError
		if !errors.As(res.refusal, &sm) {
			return false, res.err
		}
		if r.stales++; r.stales > pol.MaxStaleMapRetries {
			return false, res.err
		}
		d := pol.StaleMapBackoff
		if sm.RetryAfter > 0 && sm.RetryAfter < d {
			d = sm.RetryAfter
		}
		if err := r.c.sleep(ctx, d); err != nil {
			return false, res.err
		}
		r.c.m.redirects.WithLabelValues("stale_map").Inc()
		if nt := r.c.w.Table(); nt.Epoch() >= tg.epoch {
			r.t = nt
		} else {
			r.hintCell, r.hintEpoch = tg.cell.id, tg.epoch // retry the hint
		}
		return true, nil
	}
	return false, res.err
}

func outcomeOf(res result, code cell.Code) outcome {
	switch {
	case res.rerouted:
		return outRerouted
	case code == cell.CodeWrongCell:
		return outWrongCell
	case code == cell.CodeFrozen:
		return outFrozen
	case code == cell.CodeStaleMap:
		return outStaleMap
	case code == cell.CodeFenced:
		return outFenced
	case code != "":
		return outRefused
	case res.health == unhealth:
		return outFailure
	case res.health == ignored:
		return outCanceled
	}
	return outOK
}

var errRedirectWait = errors.New("cellkit client: map did not reach the refusal's epoch within RedirectWait")

// waitFlip waits until the table has moved past epoch seen with the key no
// longer frozen, within the call's deadline and what is left of FrozenWait.
func (r *routing) waitFlip(ctx context.Context, seen uint64) error {
	c := r.c
	start := c.clock.Now()
	c.m.frozenNow.Inc()
	t, err := c.waitTable(ctx, c.cfg.Retry.FrozenWait-r.frozenWaited, ErrFrozenWaitExceeded, func(t *router.Table) bool {
		return t.Epoch() > seen && !t.Lookup(r.key).Frozen
	})
	c.m.frozenNow.Dec()
	waited := c.clock.Now().Sub(start)
	r.frozenWaited += waited
	c.m.frozenWait.Observe(waited.Seconds())
	if err != nil {
		c.m.frozenWaits.WithLabelValues("timeout").Inc()
		return &FrozenWaitError{Key: r.key, Epoch: max(seen, c.w.Table().Epoch()), Waited: r.frozenWaited, Err: err}
	}
	c.m.frozenWaits.WithLabelValues("flipped").Inc()
	r.t = t
	return nil
}

// waitTable waits until the watcher's table satisfies ok, for at most limit
// and within ctx; it returns that table, or the cause the wait ended with
// (ctx's cause, or limitErr).
func (c *Client) waitTable(ctx context.Context, limit time.Duration, limitErr error, ok func(*router.Table) bool) (*router.Table, error) {
	if t := c.w.Table(); ok(t) {
		return t, nil
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, limitErr
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tm := c.clock.AfterFunc(limit, func() { cancel(limitErr) })
	defer tm.Stop()
	for {
		t := c.w.Table()
		if ok(t) {
			return t, nil
		}
		if _, err := c.w.WaitEpoch(wctx, t.Epoch()+1); err != nil {
			return nil, context.Cause(wctx)
		}
	}
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	return clock.Sleep(ctx, c.clock, d)
}
