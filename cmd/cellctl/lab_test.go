package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
)

// labDir is a lab directory that is torn down when the test ends, whatever
// the commands under test left running.
func labDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if lab, err := mysqllab.Attach(dir); err == nil {
			if err := lab.Close(); err != nil {
				t.Errorf("clean up the lab: %v", err)
			}
		}
	})
	return dir
}

func TestLabUpStatusDown(t *testing.T) {
	mysqllabtest.Require(t)
	c := newCtl(t, "")
	dir := labDir(t)

	r := c.raw("lab", "up", "--db", "mariadb", "--dir", dir, "-o", "json")
	if r.code != 0 {
		t.Fatalf("lab up: exit %d: %s", r.code, r.stderr)
	}
	up := decodeJSON[labResult](t, r.stdout)
	if up.State != "started" || up.Replication != "semi-sync" || len(up.Servers) != 2 {
		t.Fatalf("lab up: %+v", up)
	}
	pids := map[string]int{}
	for _, s := range up.Servers {
		pids[s.Name] = s.PID
		if !s.Running || s.PID == 0 || !strings.HasPrefix(s.DSN, "mysql://root@127.0.0.1:") || !strings.HasSuffix(s.DSN, "/pay") {
			t.Errorf("%s: %+v", s.Name, s)
		}
		if len(s.Replication) != 1 || s.Replication[0].IO != "Yes" || !s.Replication[0].SQL {
			t.Errorf("%s: replication %+v", s.Name, s.Replication)
		}
		if ss := s.SemiSync; ss == nil || !ss.MasterOn || !ss.ReplicaOn {
			t.Errorf("%s: semi-sync %+v", s.Name, ss)
		}
	}

	// Idempotent: the running lab is reported, not restarted.
	r = c.raw("lab", "up", "--db", "mariadb", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "running") || !strings.Contains(r.stdout, "master on (1 replica), replica on") {
		t.Fatalf("second lab up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st := decodeJSON[labResult](t, c.raw("lab", "status", "--dir", dir, "-o", "json").stdout)
	for _, s := range st.Servers {
		if s.PID != pids[s.Name] {
			t.Errorf("%s restarted by an idempotent lab up: pid %d, was %d", s.Name, s.PID, pids[s.Name])
		}
	}

	// A server that died is started again.
	lab, err := mysqllab.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Kill("idc-b"); err != nil {
		t.Fatal(err)
	}
	lab.Release()
	if st := decodeJSON[labResult](t, c.raw("lab", "status", "--dir", dir, "-o", "json").stdout); st.State != "partly running" {
		t.Fatalf("status with idc-b killed: %+v", st)
	}
	again := decodeJSON[labResult](t, c.raw("lab", "up", "--dir", dir, "-o", "json").stdout)
	if again.State != "restarted" || strings.Join(again.Restarted, ",") != "idc-b" {
		t.Fatalf("lab up after a kill: %+v", again)
	}

	r = c.raw("lab", "down", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "stopped idc-a, idc-b and removed") {
		t.Fatalf("lab down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab down left %s: %v", dir, err)
	}
	if lab.Running("idc-a") || lab.Running("idc-b") {
		t.Error("servers still running after lab down")
	}
	// Down again: nothing to do, not an error.
	if r := c.raw("lab", "down", "--dir", dir); r.code != 0 || !strings.Contains(r.stdout, "no lab") {
		t.Fatalf("second lab down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkFailure(t, c.raw("lab", "status", "--dir", dir), exitError, []string{"no lab", "cellctl lab up"}, []string{"lab", "status"})
}

func TestLabDownKeepData(t *testing.T) {
	mysqllabtest.Require(t)
	c := newCtl(t, "")
	dir := labDir(t)
	if r := c.raw("lab", "up", "--dir", dir, "--async", "--database", "books"); r.code != 0 {
		t.Fatalf("lab up --async: exit %d: %s", r.code, r.stderr)
	}
	if r := c.raw("lab", "down", "--dir", dir, "--keep-data"); r.code != 0 || !strings.Contains(r.stdout, "the data stays") {
		t.Fatalf("lab down --keep-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st := decodeJSON[labResult](t, c.raw("lab", "status", "--dir", dir, "-o", "json").stdout)
	if st.State != "stopped" || st.Replication != "async" {
		t.Fatalf("status after down --keep-data: %+v", st)
	}
	// Up again from the data; asking for semi-sync now only gets a note.
	up := decodeJSON[labResult](t, c.raw("lab", "up", "--dir", dir, "--database", "books", "-o", "json").stdout)
	if up.State != "restarted" || len(up.Restarted) != 2 || up.Replication != "async" || !strings.Contains(up.Note, "--async") {
		t.Fatalf("lab up after down --keep-data: %+v", up)
	}
	if !strings.HasSuffix(up.Servers[0].DSN, "/books") {
		t.Errorf("DSN %q does not name --database", up.Servers[0].DSN)
	}
}

func TestLabUsage(t *testing.T) {
	c := newCtl(t, "")
	dir := filepath.Join(t.TempDir(), "lab")
	tests := []struct {
		args  []string
		wants []string
	}{
		{[]string{"lab", "up", "--db", "postgres", "--dir", dir}, []string{`--db "postgres"`}},
		{[]string{"lab", "up", "--base-port", "80", "--dir", dir}, []string{"--base-port 80"}},
		{[]string{"lab", "up", "--database", "no-dash", "--dir", dir}, []string{`--database "no-dash"`}},
		{[]string{"lab", "up", "extra", "--dir", dir}, []string{`unexpected argument "extra"`}},
		{[]string{"lab", "nope"}, []string{`unknown command "nope"`}},
	}
	for _, tt := range tests {
		checkFailure(t, c.raw(tt.args...), exitUsage, tt.wants, tt.args)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a usage error created %s", dir)
	}
}
