package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

func TestConfigValidate(t *testing.T) {
	tb := baseMap(t, "a1")
	src := newMemSource(tb)
	t.Cleanup(src.wg.Wait)
	w := startWatcher(t, src)
	disc := &router.StaticDiscovery{}
	unstarted := router.NewWatcher(src, router.WatcherConfig{})
	for _, tc := range []struct {
		name string
		cfg  client.Config
		ok   bool
	}{
		{"defaults", client.DefaultConfig(w, disc), true},
		{"local", client.LocalConfig(w, disc), true},
		{"zero means default", client.Config{Watcher: w, Discovery: disc}, true},
		{"no watcher", client.Config{Discovery: disc}, false},
		{"watcher not started", client.Config{Watcher: unstarted, Discovery: disc}, false},
		{"no discovery", client.Config{Watcher: w}, false},
		{"negative wait", client.Config{Watcher: w, Discovery: disc, Retry: client.RetryPolicy{FrozenWait: -time.Second}}, false},
		{"negative breaker timeout", client.Config{Watcher: w, Discovery: disc, Breaker: client.BreakerConfig{OpenTimeout: -1}}, false},
		{"probe slower than staleness bound", client.Config{Watcher: w, Discovery: disc, MaxStaleness: time.Second,
			Contact: client.NewContactSource(src, client.ContactConfig{ProbeInterval: 2 * time.Second})}, false},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, client.ErrBadConfig)) {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
		if _, nerr := client.New(tc.cfg, nil); (nerr == nil) != tc.ok {
			t.Errorf("%s: New() = %v", tc.name, nerr)
		}
	}
	// Each client needs its own registerer: label them apart.
	reg := prometheus.NewRegistry()
	one := prometheus.WrapRegistererWith(prometheus.Labels{"client": "one"}, reg)
	if _, err := client.New(client.DefaultConfig(w, disc), one); err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(client.DefaultConfig(w, disc), one); err == nil {
		t.Fatal("second client registered the same metrics")
	}
	if _, err := client.New(client.DefaultConfig(w, disc), prometheus.WrapRegistererWith(prometheus.Labels{"client": "two"}, reg)); err != nil {
		t.Fatal(err)
	}
}
