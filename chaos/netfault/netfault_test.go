package netfault_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cellkit/cellkit/chaos/netfault"
)

// echo serves a line echo on loopback.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through addr and returns how long the echo took,
// or an error (deadline 500ms).
func roundTrip(addr string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	start := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func TestFaults(t *testing.T) {
	n := netfault.New(nil)
	defer n.Close()
	p, err := n.Proxy("echo", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("healthy path: %v", err)
	}

	if err := p.Latency(100*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if d, err := roundTrip(p.Addr()); err != nil || d < 180*time.Millisecond {
		t.Fatalf("latency 100ms each way: round trip %v, %v (want >= 200ms)", d, err)
	}
	// Blackhole: connected, nothing comes back.
	if err := p.Blackhole(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(p.Addr()); err == nil {
		t.Fatal("blackholed path answered")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("blackholed path: %v, want a timeout (connection open, no data)", err)
	}
	if got := p.Faults(); len(got) != 2 {
		t.Fatalf("faults %v", got)
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if d, err := roundTrip(p.Addr()); err != nil || d > 150*time.Millisecond {
		t.Fatalf("healed path: %v, %v", d, err)
	}
	// Reset: refused until healed, on the same address.
	addr := p.Addr()
	if err := p.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(addr); err == nil {
		t.Fatal("reset path answered")
	}
	if err := n.HealAll(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("address moved from %s to %s", addr, p.Addr())
	}
	if _, err := roundTrip(addr); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	if err := p.Bandwidth(0); err == nil {
		t.Fatal("bandwidth 0 accepted")
	}
	if _, err := n.Proxy("echo", "127.0.0.1:1"); err == nil {
		t.Fatal("duplicate name accepted")
	}
}
