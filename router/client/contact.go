package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// ContactReporter tells when the map source was last heard from.
type ContactReporter interface {
	// LastContact is the time of the last successful contact with the
	// source; zero if never.
	LastContact() time.Time
}

// ContactConfig tunes a ContactSource. Zero values mean the defaults.
type ContactConfig struct {
	// ProbeInterval is how often the source is read (Load, a linearizable
	// read) while it is watched, so a quiet map is not mistaken for a lost
	// source. Keep it well under Config.MaxStaleness. Default 2s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe. Default ProbeInterval.
	ProbeTimeout time.Duration
	// Clock paces the probes and stamps contacts. Default the real clock.
	Clock clock.Clock
}

// ContactSource wraps a router.Source and records when it last heard from
// the store: a successful Load, an event from Watch, or a successful probe.
// router.Watcher cannot tell that by itself (the etcd watch retries inside
// the Source and is silent while the map does not change), so give the
// watcher a ContactSource and the Client its LastContact.
type ContactSource struct {
	src router.Source
	cfg ContactConfig

	last atomic.Int64 // UnixNano of the last contact; 0 = never
	wg   sync.WaitGroup
}

var (
	_ router.Source   = (*ContactSource)(nil)
	_ ContactReporter = (*ContactSource)(nil)
)

// NewContactSource wraps src.
func NewContactSource(src router.Source, cfg ContactConfig) *ContactSource {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 2 * time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = cfg.ProbeInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	return &ContactSource{src: src, cfg: cfg}
}

func (s *ContactSource) touch() { s.last.Store(s.cfg.Clock.Now().UnixNano()) }

// LastContact implements ContactReporter.
func (s *ContactSource) LastContact() time.Time {
	n := s.last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Load implements router.Source.
func (s *ContactSource) Load(ctx context.Context) (*router.Table, int64, error) {
	t, rev, err := s.src.Load(ctx)
	if err == nil {
		s.touch()
	}
	return t, rev, err
}

// Watch implements router.Source: it forwards src's events (each one is a
// contact) and probes src with Load every ProbeInterval until ctx ends.
func (s *ContactSource) Watch(ctx context.Context, rev int64) <-chan router.Event {
	in := s.src.Watch(ctx, rev)
	out := make(chan router.Event)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for ev := range in {
			s.touch()
			select {
			case out <- ev:
			case <-ctx.Done():
				// Drain so the source's goroutine can see ctx and end.
				for range in {
				}
				return
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		s.probe(ctx)
	}()
	return out
}

func (s *ContactSource) probe(ctx context.Context) {
	t := s.cfg.Clock.NewTimer(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
		if _, _, err := s.src.Load(pctx); err == nil {
			s.touch()
		}
		cancel()
		t.Reset(s.cfg.ProbeInterval)
	}
}

// Wait blocks until the goroutines of every Watch whose context ended have
// returned. Tests use it to check for leaks.
func (s *ContactSource) Wait() { s.wg.Wait() }
