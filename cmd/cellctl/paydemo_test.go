//go:build !race

// The demo test does not run under the race detector: pure-Go SQLite is
// about ten times slower there, so a stage's copy outlasts the load
// generator's 15s operation deadline and the run proves nothing about the
// demo people run. scripts/test runs this file in its own step, without
// -race, and then the README's first command itself.

package main

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPayDemo runs the main job, short: a move of IDC-A's users to IDC-B
// and back under payments, with its own invariant checks. It must pass,
// report each stage's window and leave nothing behind.
func TestPayDemo(t *testing.T) {
	t.Parallel()
	c := newCtl(t, "")
	c.timeout = 3 * time.Minute // SQLite is slow under the race detector
	r := c.raw("demo", "--quick", "--slots", "256", "--users", "20", "--workers", "2", "--rate", "100", "--bake", "0s")
	if r.code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Start the platform", "IDC-A -> IDC-B  1/8", "IDC-B -> IDC-A  1 ", "copied",
		"ok   every acknowledged payment exists exactly once", "ok   money is conserved", "All invariants hold"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output does not mention %q", want)
		}
	}
	dir := regexp.MustCompile(`in (/\S+cellkit-demo-\S+), and is removed`).FindStringSubmatch(r.stdout)
	if dir == nil {
		t.Fatal("demo does not say where its data is")
	}
	if _, err := os.Stat(dir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo left %s behind (stat: %v)", dir[1], err)
	}
	rep := decodeJSON[payDemoReport](t, c.raw("demo", "--quick", "--slots", "256", "--users", "10", "--workers", "2", "--rate", "100", "--stages", "1", "--bake", "0s", "-o", "json").stdout)
	if !rep.OK || len(rep.Moves) != 2 || rep.Load.Payments == 0 || !rep.Books.OK() {
		t.Errorf("demo -o json: ok %v, %d moves, %d payments, books %+v", rep.OK, len(rep.Moves), rep.Load.Payments, rep.Books.Failed())
	}
	c.fails(exitUsage, []string{"--users 0"}, "demo", "--users", "0")
	c.fails(exitUsage, []string{"--stages"}, "demo", "--stages", "banana")
	c.fails(exitUsage, []string{"--rate"}, "demo", "--rate", "-1")
	c.fails(exitUsage, []string{"--slots 100"}, "demo", "--slots", "100")
}
