package client

import (
	"fmt"
	"time"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// Config configures a Client. Zero values mean the defaults
// (DefaultConfig); Watcher and Discovery are required.
type Config struct {
	// Watcher holds the shard map the client routes by. Required, and
	// started (its Table is not nil).
	Watcher *router.Watcher
	// Discovery says where each cell's instances listen. Required.
	Discovery router.Discovery
	// Contact tells when the map source was last heard from; wrap the
	// watcher's Source with NewContactSource to get one. router.Watcher
	// itself cannot tell: a quiet map and a dead etcd look the same to it.
	// Nil: Stale always reports false.
	Contact ContactReporter
	// MaxStaleness is how long the source may go unheard before the client
	// reports its map stale (Stale, metric cellkit_client_map_stale). A stale
	// client keeps routing on the last good table: guards still refuse what
	// their cell does not own. Default 10s.
	MaxStaleness time.Duration
	// Retry says how refusals are retried.
	Retry RetryPolicy
	// Breaker configures the per-cell circuit breakers.
	Breaker BreakerConfig
	// IsWrite reports whether a gRPC method (full name, "/pkg.Svc/Method")
	// writes. A write without an idempotency key in its context gets a fresh
	// one (NewIdempotencyKey), so its retries are recognisable as such, and
	// a write for a key the client's table shows frozen waits for the flip
	// before it is sent (the owner still serves reads of a frozen key).
	// Default: every method is a write.
	IsWrite func(fullMethod string) bool
	// Clock paces waits and staleness. Default the real clock. (The
	// breakers' own timers use real time: gobreaker takes no clock.)
	Clock clock.Clock
}

// RetryPolicy says what the SDK does with guard refusals. Every wait is
// also bounded by the call's deadline. Retries of one call reuse its
// idempotency key.
type RetryPolicy struct {
	// MaxRedirects bounds retries after WRONG_CELL: the client waits for its
	// map to reach the refusal's epoch (at most RedirectWait), then sends
	// the call to the new owner. Default 1; negative: never retry.
	MaxRedirects int
	// RedirectWait bounds the wait for the map to reach a WRONG_CELL
	// refusal's epoch. If the map does not get there in time, the call goes
	// to the owner the refusal named, stamped with the refusal's epoch (that
	// owner's guard checks it again). Default 1s.
	RedirectWait time.Duration
	// FrozenWait bounds, per call, the total time spent waiting for a
	// frozen key's flip (the map moving past the frozen epoch with the key
	// unfrozen); the call's deadline bounds it too. Default 3s.
	FrozenWait time.Duration
	// MaxFrozenRetries bounds how many FROZEN refusals one call waits out.
	// Default 2; negative: never retry.
	MaxFrozenRetries int
	// MaxStaleMapRetries bounds retries after STALE_MAP (the guard had not
	// reached the call's epoch yet). Default 1; negative: never retry.
	MaxStaleMapRetries int
	// StaleMapBackoff is the pause before a STALE_MAP retry: the refusal's
	// retry-after, but at most this. Default 100ms.
	StaleMapBackoff time.Duration
	// StreamReplay bounds how many sent messages a stream keeps so that it
	// can be replayed to the new owner if the guard refuses it before the
	// first response. Default 8; negative: streams are never retried.
	StreamReplay int
}

// BreakerConfig configures the circuit breaker of each cell
// (github.com/sony/gobreaker/v2). Only Unavailable and DeadlineExceeded
// answers (over HTTP: transport errors and 502/503/504 that are not guard
// refusals) count as failures; guard refusals prove the cell is alive.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker. Default 5.
	ConsecutiveFailures uint32
	// OpenTimeout is how long an open breaker fails calls fast before it
	// lets probes through (half-open). Default 5s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes a half-open breaker lets through;
	// that many successes close it. Default 1.
	HalfOpenRequests uint32
	// Interval clears the failure counts of a closed breaker periodically.
	// Default 0: counts clear on every success only.
	Interval time.Duration
	// Disabled turns the breakers off.
	Disabled bool
}

// DefaultConfig returns the defaults for a watcher and a discovery.
func DefaultConfig(w *router.Watcher, d router.Discovery) Config {
	return Config{
		Watcher:      w,
		Discovery:    d,
		MaxStaleness: 10 * time.Second,
		Retry: RetryPolicy{
			MaxRedirects:       1,
			RedirectWait:       time.Second,
			FrozenWait:         3 * time.Second,
			MaxFrozenRetries:   2,
			MaxStaleMapRetries: 1,
			StaleMapBackoff:    100 * time.Millisecond,
			StreamReplay:       8,
		},
		Breaker: BreakerConfig{ConsecutiveFailures: 5, OpenTimeout: 5 * time.Second, HalfOpenRequests: 1},
		Clock:   clock.Real(),
	}
}

// LocalConfig is DefaultConfig with short waits, for development and tests
// on one machine.
func LocalConfig(w *router.Watcher, d router.Discovery) Config {
	c := DefaultConfig(w, d)
	c.MaxStaleness = 2 * time.Second
	c.Retry.RedirectWait = 200 * time.Millisecond
	c.Retry.FrozenWait = 2 * time.Second
	c.Retry.StaleMapBackoff = 10 * time.Millisecond
	c.Breaker.ConsecutiveFailures = 3
	c.Breaker.OpenTimeout = time.Second
	return c
}

func (c *Config) setDefaults() {
	d := DefaultConfig(c.Watcher, c.Discovery)
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	defInt := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	def(&c.MaxStaleness, d.MaxStaleness)
	defInt(&c.Retry.MaxRedirects, d.Retry.MaxRedirects)
	def(&c.Retry.RedirectWait, d.Retry.RedirectWait)
	def(&c.Retry.FrozenWait, d.Retry.FrozenWait)
	defInt(&c.Retry.MaxFrozenRetries, d.Retry.MaxFrozenRetries)
	defInt(&c.Retry.MaxStaleMapRetries, d.Retry.MaxStaleMapRetries)
	def(&c.Retry.StaleMapBackoff, d.Retry.StaleMapBackoff)
	defInt(&c.Retry.StreamReplay, d.Retry.StreamReplay)
	if c.Breaker.ConsecutiveFailures == 0 {
		c.Breaker.ConsecutiveFailures = d.Breaker.ConsecutiveFailures
	}
	def(&c.Breaker.OpenTimeout, d.Breaker.OpenTimeout)
	if c.Breaker.HalfOpenRequests == 0 {
		c.Breaker.HalfOpenRequests = d.Breaker.HalfOpenRequests
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
}

// Validate checks the fields, after defaults are applied.
func (c Config) Validate() error {
	c.setDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cellkit client: "+format+": %w", append(args, ErrBadConfig)...)
	}
	switch {
	case c.Watcher == nil:
		return bad("Watcher is required")
	case c.Watcher.Table() == nil:
		return bad("Watcher has no table: Start it first")
	case c.Discovery == nil:
		return bad("Discovery is required")
	case c.MaxStaleness < 0:
		return bad("MaxStaleness %v is negative", c.MaxStaleness)
	case c.Retry.RedirectWait < 0 || c.Retry.FrozenWait < 0 || c.Retry.StaleMapBackoff < 0:
		return bad("Retry has a negative duration")
	case c.Breaker.OpenTimeout < 0 || c.Breaker.Interval < 0:
		return bad("Breaker has a negative duration")
	}
	if cs, ok := c.Contact.(*ContactSource); ok && cs.cfg.ProbeInterval >= c.MaxStaleness {
		return bad("the ContactSource probes every %v, not within MaxStaleness %v: a quiet map would read as stale", cs.cfg.ProbeInterval, c.MaxStaleness)
	}
	return nil
}

// maxAttempts bounds the attempts of one call, whatever mix of refusals it
// meets (each kind is bounded on its own; this also bounds re-routes when
// the map changes under a waiting pick).
func (p RetryPolicy) maxAttempts() int {
	return 1 + max(p.MaxRedirects, 0) + max(p.MaxFrozenRetries, 0) + max(p.MaxStaleMapRetries, 0) + 2
}
