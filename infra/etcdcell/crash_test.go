package etcdcell_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
)

// TestCrash shows what a drill's crash of an instance does: a write held
// inside the guard has its context cancelled at once, nothing is admitted
// afterwards, and the instance's ack and endpoint are not removed — they
// stay until the lease expires by itself, as a killed process's would.
func TestCrash(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	createMap(t, cli)
	var log admission.Log
	in := register(t, cli, "a1", "a1-0", func(c *etcdcell.Config) { c.LeaseTTL = 2 * time.Second })
	cs := serveCellWork(t, in, &log, 30*time.Second) // every write runs until its context ends
	key := keyIn(5)

	held := make(chan error, 1)
	go func() {
		_, err := cs.credit(ctxT(t), key, "w1")
		held <- err
	}()
	eventually(t, "the write admitted", func() bool { return len(log.Records()) == 1 })
	crashed := time.Now()
	in.Crash()
	select {
	case <-held: // its 30s of work was cut short: the crash cancelled its context
	case <-time.After(5 * time.Second):
		t.Fatal("the held write's context was not cancelled by the crash")
	}
	if _, err := in.Guard().Admit(context.Background(), key, cell.Write, 0); err == nil {
		t.Fatal("a crashed instance admitted a write")
	} else if _, ok := errors.AsType[*cell.FencedError](err); !ok {
		t.Fatalf("admit after crash: %v, want FencedError", err)
	}
	if !exists(t, cli, ackKey("a1", "a1-0")) || !exists(t, cli, endpointKey("a1", "a1-0")) {
		t.Fatal("crash removed the ack or endpoint (it must leave the lease to expire)")
	}
	eventually(t, "the lease to expire", func() bool { return !exists(t, cli, ackKey("a1", "a1-0")) })
	if d := time.Since(crashed); d < time.Second {
		t.Fatalf("ack gone %v after the crash: revoked, not expired", d)
	}
	for _, r := range log.Records() {
		if r.End.IsZero() || r.End.Sub(crashed) > time.Second {
			t.Fatalf("the write admitted before the crash ran on after it: %+v", r)
		}
		if r.Start.After(crashed) {
			t.Fatalf("admitted after the crash: %+v", r)
		}
	}
	if err := in.Close(); err != nil { // a no-op after Crash
		t.Fatal(err)
	}
}
