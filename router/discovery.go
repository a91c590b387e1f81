package router

import (
	"slices"
	"strings"
	"sync"
)

// Instance is one running instance of a cell and where it listens.
type Instance struct {
	Cell     string `json:"cell"`
	ID       string `json:"id"`
	GRPCAddr string `json:"grpc,omitempty"` // host:port of its gRPC server
	HTTPAddr string `json:"http,omitempty"` // host:port of its HTTP server
}

// Discovery tells SDKs and routers where each cell's instances are.
// infra adapters implement it from etcd registrations (the embedded default)
// or Consul; StaticDiscovery serves a fixed list.
type Discovery interface {
	// Instances returns every known instance, sorted by cell then ID, and a
	// channel that is closed at the next change.
	Instances() ([]Instance, <-chan struct{})
}

// StaticDiscovery is a Discovery whose instances change only when Set is
// called. The zero value is empty and usable.
type StaticDiscovery struct {
	mu      sync.Mutex
	list    []Instance
	changed chan struct{}
}

var _ Discovery = (*StaticDiscovery)(nil)

// Instances implements Discovery.
func (d *StaticDiscovery) Instances() ([]Instance, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return slices.Clone(d.list), d.changed
}

// Set replaces the instances and wakes every waiter.
func (d *StaticDiscovery) Set(list []Instance) {
	list = slices.Clone(list)
	SortInstances(list)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.list = list
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
}

// SortInstances orders instances by cell, then ID.
func SortInstances(list []Instance) {
	slices.SortFunc(list, func(a, b Instance) int {
		if c := strings.Compare(a.Cell, b.Cell); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
