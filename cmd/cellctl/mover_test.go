package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
)

// TestCutoverCopyMover moves IDC-A to IDC-B with --mover copy over real
// SQLite books: every account ends at the cell that owns its user now,
// exactly once, and the sources are pruned.
func TestCutoverCopyMover(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	ctx := context.Background()
	tb := c.table()
	dir := t.TempDir()
	var args []string
	svc := map[string]*paycell.Service{}
	for _, cl := range tb.Cells() {
		dsn := "sqlite:" + filepath.Join(dir, cl.ID+".db")
		db, d, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := schema.Migrate(ctx, db, d); err != nil {
			t.Fatal(err)
		}
		s, err := paycell.New(paycell.DefaultConfig(cl.ID, tb.SlotCount(), db, d))
		if err != nil {
			t.Fatal(err)
		}
		svc[cl.ID] = s
		args = append(args, "--db", cl.ID+"="+dsn)
	}
	users := map[string]string{} // user -> owner before
	for i := range 60 {
		u := "cli-user-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		owner := tb.Owner(u).ID
		if _, err := svc[owner].OpenAccount(ctx, paycell.OpenRequest{RequestID: "open-" + u, Owner: u}); err != nil {
			t.Fatal(err)
		}
		users[u] = owner
	}
	r := c.must(append(startArgs("--reason", "copy drill", "--auto", "--bake", "1ms", "--mover", "copy"), args...)...)
	if !strings.Contains(r.stdout, "copy: copied") || !strings.Contains(r.stdout, "done: every stage moved") {
		t.Fatalf("cutover with --mover copy:\n%s", r.stdout)
	}
	after := c.table()
	for u := range users {
		now := after.Owner(u).ID
		for id, s := range svc {
			_, err := s.Balance(ctx, u)
			if id == now && err != nil {
				t.Errorf("%s: not at its owner %s: %v", u, now, err)
			}
			if id != now && err == nil {
				t.Errorf("%s: still at %s after the move to %s (not pruned)", u, id, now)
			}
		}
	}
}
