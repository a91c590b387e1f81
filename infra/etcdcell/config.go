package etcdcell

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// ErrBadConfig is wrapped by every configuration error.
var ErrBadConfig = errors.New("bad etcdcell configuration")

// Observer receives lease and ack events (guardmetrics.Metrics implements
// it). Calls come from the instance's goroutines and must not block.
type Observer interface {
	// LeaseRenewed reports one renewal attempt (err nil: renewed).
	LeaseRenewed(cell, instance string, err error)
	// Acked reports the epoch now acknowledged in etcd.
	Acked(cell, instance string, epoch uint64)
}

// Config configures one guard instance. Zero values mean the defaults.
type Config struct {
	// Cluster selects the key prefix /cellkit/<cluster>/. Default "default".
	Cluster string
	// Cell is the cell this instance serves. Required.
	Cell string
	// Instance names this instance within the cell (e.g. the pod name).
	// Required; two live instances must not share a name.
	Instance string
	// GRPCAddr and HTTPAddr are published in endpoints/<cell>/<instance>
	// for discovery (host:port). Optional.
	GRPCAddr, HTTPAddr string
	// LeaseTTL is the TTL asked for the instance's lease. etcd leases count
	// whole seconds: it is rounded up, and etcd may grant more (its minimum
	// is 1.5x the election timeout); the fence uses the TTL etcd grants.
	// Default 5s.
	LeaseTTL time.Duration
	// FenceMargin is taken off every lease deadline: the instance stops
	// admitting at (send time of its last successful renewal) + TTL −
	// FenceMargin. Must be less than LeaseTTL. Default 1s.
	FenceMargin time.Duration
	// StaleWait and FrozenRetryAfter tune the guard (see cell.Config).
	StaleWait, FrozenRetryAfter time.Duration
	// RetryBackoff is the base pause between attempts to re-register or
	// to publish an ack after a failure; it grows to 8x with jitter.
	// Default LeaseTTL/10.
	RetryBackoff time.Duration
	// Clock is the monotonic time source of the fence and the loops.
	// Default the real clock.
	Clock clock.Clock
	// Logger receives the instance's lifecycle events. Default slog.Default().
	Logger *slog.Logger
	// Observer, if set, receives lease renewals and acks (metrics).
	Observer Observer
}

// DefaultConfig returns the production defaults for an instance of cellID.
func DefaultConfig(cellID, instance string) Config {
	return Config{
		Cluster:          etcdstore.DefaultCluster,
		Cell:             cellID,
		Instance:         instance,
		LeaseTTL:         5 * time.Second,
		FenceMargin:      time.Second,
		StaleWait:        500 * time.Millisecond,
		FrozenRetryAfter: 100 * time.Millisecond,
		RetryBackoff:     500 * time.Millisecond,
		Clock:            clock.Real(),
	}
}

// Local returns a preset for dev and tests: a 2s lease and a 500ms margin,
// so a cut-off instance fences within 1.5s of its last renewal.
func Local(cellID, instance string) Config {
	c := DefaultConfig(cellID, instance)
	c.LeaseTTL, c.FenceMargin, c.RetryBackoff = 2*time.Second, 500*time.Millisecond, 100*time.Millisecond
	return c
}

func (c *Config) setDefaults() {
	d := DefaultConfig(c.Cell, c.Instance)
	if c.Cluster == "" {
		c.Cluster = d.Cluster
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.FenceMargin == 0 {
		c.FenceMargin = d.FenceMargin
	}
	if c.StaleWait == 0 {
		c.StaleWait = d.StaleWait
	}
	if c.FrozenRetryAfter == 0 {
		c.FrozenRetryAfter = d.FrozenRetryAfter
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = c.LeaseTTL / 10
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the fields against each other (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	if err := etcdstore.CheckCluster(c.Cluster); err != nil {
		return fmt.Errorf("etcdcell: %v: %w", err, ErrBadConfig)
	}
	for what, id := range map[string]string{"cell": c.Cell, "instance": c.Instance} {
		if err := (router.Cell{ID: id, IDC: "x", State: router.StateActive}).Check(); err != nil || id == "" {
			return fmt.Errorf("etcdcell: %s %q (want 1-63 of A-Z a-z 0-9 . _ -): %w", what, id, ErrBadConfig)
		}
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("etcdcell: LeaseTTL %v (etcd leases count whole seconds; want at least 1s): %w", c.LeaseTTL, ErrBadConfig)
	}
	if c.FenceMargin < 0 || c.FenceMargin >= c.LeaseTTL {
		return fmt.Errorf("etcdcell: FenceMargin %v must be in [0, LeaseTTL %v): %w", c.FenceMargin, c.LeaseTTL, ErrBadConfig)
	}
	if c.StaleWait < 0 || c.FrozenRetryAfter < 0 || c.RetryBackoff < 0 {
		return fmt.Errorf("etcdcell: negative durations: %w", ErrBadConfig)
	}
	return nil
}

func (c Config) ttlSeconds() int64 { return int64((c.LeaseTTL + time.Second - 1) / time.Second) }

func (c Config) guardConfig() cell.Config {
	return cell.Config{Cell: c.Cell, Instance: c.Instance, StaleWait: c.StaleWait, FrozenRetryAfter: c.FrozenRetryAfter, Clock: c.Clock}
}
