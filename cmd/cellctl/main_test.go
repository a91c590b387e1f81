package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a command leaves a goroutine behind: every
// etcd client, embedded etcd and signal watcher must be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
