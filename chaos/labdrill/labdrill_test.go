package labdrill_test

import (
	"context"
	"testing"
	"time"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/chaos/labdrill"
	"github.com/cellkit/cellkit/chaos/scenarios"
)

func builtin(t *testing.T) map[string]*drill.Scenario {
	t.Helper()
	out, err := scenarios.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 8 {
		t.Fatalf("%d built-in scenarios, want 8", len(out))
	}
	return out
}

func run(t *testing.T, sc *drill.Scenario, db string) *drill.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := labdrill.Run(ctx, sc, labdrill.Options{Dir: t.TempDir(), DB: db, OnEvent: func(ev drill.Event) {
		t.Logf("%7.2fs %-9s %s", time.Duration(ev.Offset).Seconds(), ev.Kind, ev.Text)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.Summary())
	if len(rep.Invariants) == 0 {
		t.Fatalf("the books were not checked: %v", rep.Errors)
	}
	return rep
}

func mustPass(t *testing.T, rep *drill.Report) {
	t.Helper()
	if !rep.Pass {
		for _, c := range rep.Checks {
			if !c.OK {
				t.Errorf("check %s: want %s, got %s", c.Name, c.Want, c.Got)
			}
		}
		t.Fatalf("drill %s failed: %v", rep.Scenario, rep.Errors)
	}
}

// TestPlannedSwitchSQLite runs the planned IDC switch on the embedded
// default: SQLite books, the copy mover.
func TestPlannedSwitchSQLite(t *testing.T) {
	rep := run(t, builtin(t)["planned-idc-switch"], "sqlite")
	mustPass(t, rep)
	if rep.Load.Payments < 600 || len(rep.Cutovers) != 2 {
		t.Fatalf("%d payments, %d cutovers", rep.Load.Payments, len(rep.Cutovers))
	}
}
