//go:build !race

package labdrill_test

import (
	"strings"
	"testing"
)

// The MariaDB drills measure MTTR; the race detector's slowdown would
// measure itself. scripts/test runs this file in its own step.

// TestScenariosMariaDB runs every built-in scenario on the MariaDB lab
// (two servers, GTID replication, semi-sync unless the scenario says
// async). Without MariaDB installed it fails: scripts/tools/mariadb.sh.
func TestScenariosMariaDB(t *testing.T) {
	for name, sc := range builtin(t) {
		t.Run(name, func(t *testing.T) {
			rep := run(t, sc, "mariadb")
			mustPass(t, rep)
			switch name {
			case "idc-power-loss", "idc-partition":
				if rep.MTTR == nil {
					t.Fatal("no MTTR measured")
				}
				t.Logf("MTTR %v with lease TTL %v", rep.MTTR, rep.Lab.LeaseTTL)
			case "idc-power-loss-async":
				// Asynchronous replication loses what IDC-A acknowledged in
				// its last moments: the report must say so, naming each.
				if rep.RPO.Lost == 0 || len(rep.RPO.Missing) != rep.RPO.Lost {
					t.Fatalf("RPO %+v: want the lost payments named", rep.RPO)
				}
				for _, m := range rep.RPO.Missing {
					if m.RequestID == "" || m.Owner == "" || m.Cell == "" {
						t.Fatalf("a lost payment without its names: %+v", m)
					}
				}
				if !strings.Contains(rep.RPO.Note, "lost") {
					t.Fatalf("RPO note %q", rep.RPO.Note)
				}
			}
		})
	}
}
