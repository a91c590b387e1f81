package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/cellkit/cellkit/lab"
	"github.com/cellkit/cellkit/lab/load"
)

func TestDrillCommands(t *testing.T) {
	c := newCtl(t, closedPort(t))
	r := c.must("drill", "list")
	for _, name := range []string{"planned-idc-switch", "idc-power-loss", "idc-power-loss-async", "idc-partition",
		"gray-failure", "etcd-leader-loss", "router-crash", "controller-crash"} {
		if !strings.Contains(r.stdout, name) {
			t.Errorf("drill list does not name %s", name)
		}
	}
	c.fails(exitUsage, []string{"no built-in scenario", "planned-idc-switch"}, "drill", "run", "no-such-drill")
	c.fails(exitUsage, []string{"--db", "sqlite or mariadb"}, "drill", "run", "planned-idc-switch", "--db", "oracle")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\ndescription: a bad drill\nsteps:\n  - inject: {kind: kill, target: \"idc:A\", lantency: 1s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.fails(exitUsage, []string{"step 1", "lantency"}, "drill", "run", bad)
	c.fails(exitUsage, []string{"--db"}, "verify")
}

// TestVerify checks a lab's books with `cellctl verify` after a short
// load, then again after an acknowledged payment's rows are removed.
func TestVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	l, err := lab.Start(ctx, lab.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bankSrv := httptest.NewServer(l.Bank().Handler())
	defer bankSrv.Close()
	g, err := load.New(load.Config{BaseURL: l.RouterURL, Users: lab.Users(20), Workers: 2, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithTimeout(ctx, 1500*time.Millisecond)
	g.Run(lctx)
	stop()
	rep, err := l.Books(ctx, g.Acks()) // quiesce the bank and settle, as an operator would
	if err != nil || !rep.OK() {
		t.Fatalf("books: %v %+v", err, rep.Failed())
	}
	acks := filepath.Join(dir, "acks.json")
	data, _ := json.Marshal(g.Acks())
	if err := os.WriteFile(acks, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCtl(t, l.EtcdEndpoints()[0])
	c.cluster = "lab"
	args := []string{"verify", "--acks", acks, "--bank", bankSrv.URL}
	for _, cell := range []string{"a1", "a2", "b1", "b2"} {
		args = append(args, "--db", cell+"=sqlite:"+filepath.Join(dir, cell+".db"))
	}
	r := c.must(args...)
	if strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "money is conserved") {
		t.Fatalf("verify on good books:\n%s", r.stdout)
	}

	// Remove an acknowledged payment from its cell's books.
	var pay load.Ack
	for _, a := range g.Acks() {
		if a.Op == load.OpPay {
			pay = a
			break
		}
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, pay.Cell+".db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "DELETE FROM txns WHERE request_id = ?", pay.RequestID); err != nil {
		t.Fatal(err)
	}
	r = c.fails(exitError, []string{"invariant"}, args...)
	if !strings.Contains(r.stdout, pay.RequestID) {
		t.Fatalf("verify does not name the missing payment %s:\n%s", pay.RequestID, r.stdout)
	}
}
