package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

var fourCells = []string{"--cell", "a1@IDC-A,a2@IDC-A", "--cell", "b1@IDC-B", "--cell", "b2@IDC-B"}

func initArgs(extra ...string) []string {
	return append(append([]string{"map", "init"}, fourCells...), extra...)
}

// TestMapLifecycle walks the everyday path: init, show, route, cells,
// whitelist, history.
func TestMapLifecycle(t *testing.T) {
	t.Parallel()
	c := newCtl(t, startEtcd(t))

	// map init splits 1024 slots evenly in the order given.
	r := c.must(initArgs("--endpoint", "a1=10.0.0.1:9000", "--endpoint", "a1=10.0.0.2:9000", "--reason", "first map")...)
	for _, want := range []string{"created the map of cluster test at epoch 1", "0-255", "768-1023", "10.0.0.1:9000,10.0.0.2:9000"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("map init output does not mention %q", want)
		}
	}

	// map show: table and the exact document as JSON and YAML.
	r = c.must("map", "show")
	for _, want := range []string{"epoch    1", "slots    1024", "4 in 2 IDCs", "256-511", "whitelist: none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("map show does not mention %q:\n%s", want, r.stdout)
		}
	}
	r = c.must("map", "show", "-o", "json")
	tbl, err := router.Decode([]byte(r.stdout))
	if err != nil {
		t.Fatalf("map show -o json does not decode: %v", err)
	}
	if tbl.Epoch() != 1 || tbl.SlotCount() != 1024 || len(tbl.Cells()) != 4 {
		t.Fatalf("decoded map: epoch %d, %d slots, %d cells", tbl.Epoch(), tbl.SlotCount(), len(tbl.Cells()))
	}
	for i, id := range []string{"a1", "a2", "b1", "b2"} {
		if got := tbl.SlotOwner(i * 256); got != id {
			t.Errorf("slot %d owned by %q, want %q", i*256, got, id)
		}
	}
	if r := c.must("map", "show", "-o", "yaml"); !strings.Contains(r.stdout, "slotCount: 1024") {
		t.Errorf("map show -o yaml:\n%s", r.stdout)
	}

	// route -o json: stable field names, IDs route with their key.
	id, err := router.NewID("ord", "u42")
	if err != nil {
		t.Fatal(err)
	}
	r = c.must("route", "u42", id, "-o", "json")
	routes := decodeJSON[[]routeRow](t, r.stdout)
	if len(routes) != 2 {
		t.Fatalf("%d routes, want 2", len(routes))
	}
	want := tbl.Lookup("u42")
	u, o := routes[0], routes[1]
	if u.Key != "u42" || u.Slot != want.Slot || u.Cell != want.Cell.ID || u.IDC != want.Cell.IDC || u.Epoch != 1 || u.Frozen || u.Whitelisted || u.ID {
		t.Errorf("route u42 = %+v, want slot %d cell %s", u, want.Slot, want.Cell.ID)
	}
	if o.Key != id || !o.ID || o.Slot != u.Slot || o.Cell != u.Cell {
		t.Errorf("route %s = %+v, want the route of u42 with id=true", id, o)
	}
	for _, field := range []string{`"key"`, `"slot"`, `"cell"`, `"idc"`, `"epoch"`, `"frozen"`, `"cutover"`, `"whitelisted"`, `"id"`} {
		if !strings.Contains(r.stdout, field) {
			t.Errorf("route -o json has no %s field", field)
		}
	}

	// cell add / set-state / list.
	r = c.must("cell", "add", "c1", "--idc", "IDC-C", "--endpoint", "10.3.0.1:9000", "--reason", "build out IDC-C")
	if !strings.Contains(r.stdout, "map epoch 1 -> 2") || !strings.Contains(r.stdout, "cell c1 added") {
		t.Errorf("cell add output:\n%s", r.stdout)
	}
	c.must("cell", "set-state", "c1", "draining", "--reason", "not yet")
	if r := c.must("cell", "set-state", "c1", "draining", "--reason", "again"); !strings.Contains(r.stdout, "nothing changed (epoch 3)") {
		t.Errorf("no-op set-state output: %q", r.stdout)
	}
	cells := decodeJSON[[]cellRow](t, c.must("cell", "list", "-o", "json").stdout)
	if len(cells) != 5 || cells[4].ID != "c1" || cells[4].State != "draining" || cells[4].Slots != 0 || cells[0].Slots != 256 {
		t.Errorf("cell list = %+v", cells)
	}

	// whitelist add / list / rm; the pinned key and its IDs move together.
	target := "b1"
	if u.Cell == "b1" {
		target = "a1"
	}
	r = c.must("whitelist", "add", "u42", "u43", "--cell", target, "--reason", "canary users")
	if !strings.Contains(r.stdout, `whitelist "u42" -> `+target) || !strings.Contains(r.stdout, "map epoch 3 -> 4") {
		t.Errorf("whitelist add output:\n%s", r.stdout)
	}
	routes = decodeJSON[[]routeRow](t, c.must("route", "u42", id, "-o", "json").stdout)
	for _, rt := range routes {
		if rt.Cell != target || !rt.Whitelisted || rt.Epoch != 4 {
			t.Errorf("after whitelist: route %s = %+v, want whitelisted to %s at epoch 4", rt.Key, rt, target)
		}
	}
	wl := decodeJSON[[]whitelistRow](t, c.must("whitelist", "list", "-o", "json").stdout)
	if len(wl) != 2 || wl[0].Key != "u42" || wl[0].Cell != target || wl[0].SlotOwner != u.Cell {
		t.Errorf("whitelist list = %+v", wl)
	}
	c.must("whitelist", "rm", "u43", "--reason", "u43 opted out")
	if r := c.must("whitelist", "list"); strings.Contains(r.stdout, "u43") || !strings.Contains(r.stdout, "u42") {
		t.Errorf("whitelist list after rm:\n%s", r.stdout)
	}

	// history: newest first, with reasons, actor and what changed.
	r = c.must("map", "history")
	for _, want := range []string{"u43 opted out", "canary users", "build out IDC-C", "first map", "tester", `whitelist "u43" removed`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("map history does not mention %q:\n%s", want, r.stdout)
		}
	}
	recs := decodeJSON[[]etcdstore.AuditRecord](t, c.must("map", "history", "--limit", "2", "-o", "json").stdout)
	if len(recs) != 2 || recs[0].Epoch != 5 || recs[0].Why != "u43 opted out" || recs[0].Who != "tester" || recs[1].Epoch != 4 {
		t.Errorf("history --limit 2 = %+v", recs)
	}
}

// TestCorruptMap: a map broken by a raw etcd client is named by validate,
// refused by every command, and repaired by map init --force.
func TestCorruptMap(t *testing.T) {
	t.Parallel()
	ep := startEtcd(t)
	c := newCtl(t, ep)
	c.must(initArgs("--reason", "first map")...)

	bad := `{"schema":1,"epoch":7,"slotCount":1024,"cells":[{"id":"a1","idc":"IDC-A","state":"offline"}],"slots":[{"first":0,"last":511,"cell":"a1"}]}`
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := rawClient(t, ep).Put(ctx, etcdstore.KeysFor(c.cluster).Map(), bad); err != nil {
		t.Fatal(err)
	}

	r := c.fails(exitInvalid, []string{"invalid"}, "map", "validate")
	for _, want := range []string{"map epoch 7 is NOT valid: 2 problems", "slots 512-1023 have no owner", `slots 0-511 are owned by offline cell "a1"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("map validate does not say %q:\n%s", want, r.stdout)
		}
	}
	v := decodeJSON[validateResult](t, c.run("map", "validate", "-o", "json").stdout)
	if v.Valid || len(v.Problems) != 2 || v.Epoch != 7 || v.Revision == 0 {
		t.Errorf("map validate -o json = %+v", v)
	}
	c.fails(exitInvalid, []string{"corrupt or invalid", "map validate"}, "map", "show")
	c.fails(exitInvalid, []string{"corrupt or invalid"}, "route", "u42")
	c.fails(exitInvalid, []string{"corrupt or invalid"}, "whitelist", "add", "u42", "--cell", "a1", "--reason", "x")
	c.fails(exitConflict, []string{"already exists", "--force"}, initArgs("--reason", "repair")...)

	r = c.must(initArgs("--force", "--reason", "repair the map")...)
	if !strings.Contains(r.stdout, "replaced the map of cluster test at epoch 8") {
		t.Errorf("map init --force output:\n%s", r.stdout)
	}
	if r := c.must("map", "validate"); !strings.Contains(r.stdout, "map epoch 8 is valid: 1024 slots, 4 cells in 2 IDCs") {
		t.Errorf("map validate after repair:\n%s", r.stdout)
	}
	recs := decodeJSON[[]etcdstore.AuditRecord](t, c.must("map", "history", "--limit", "1", "-o", "json").stdout)
	if len(recs) != 1 || recs[0].Op != "replace" || recs[0].Why != "repair the map" || recs[0].Epoch != 8 {
		t.Errorf("audit record of the repair = %+v", recs)
	}

	// A malformed document: the decoder's complaint is named.
	if _, err := rawClient(t, ep).Put(ctx, etcdstore.KeysFor(c.cluster).Map(), `{"schema":1,"epoch":9,"bogus":true}`); err != nil {
		t.Fatal(err)
	}
	if r := c.fails(exitInvalid, nil, "map", "validate"); !strings.Contains(r.stdout, `unknown field "bogus"`) {
		t.Errorf("map validate of a malformed document:\n%s", r.stdout)
	}
}

// TestFiles covers map validate --file, map diff and map init --from-file.
func TestFiles(t *testing.T) {
	t.Parallel()
	c := newCtl(t, startEtcd(t))
	c.must(initArgs("--reason", "first map")...)
	dir := t.TempDir()
	before := filepath.Join(dir, "before.json")
	if err := os.WriteFile(before, []byte(c.must("map", "show", "-o", "json").stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	c.must("whitelist", "add", "u42", "--cell", "b2", "--reason", "canary")

	r := c.must("map", "diff", before)
	if !strings.Contains(r.stdout, `whitelist "u42" removed (was b2)`) || !strings.Contains(r.stdout, "(epoch 2) ->") {
		t.Errorf("map diff FILE:\n%s", r.stdout)
	}
	after := filepath.Join(dir, "after.json")
	if err := os.WriteFile(after, []byte(c.must("map", "show", "-o", "json").stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	d := decodeJSON[diffResult](t, c.must("map", "diff", before, after, "-o", "json").stdout)
	if len(d.Changes) != 1 || len(d.Diff.WhitelistAdded) != 1 || d.Diff.WhitelistAdded[0].Cell != "b2" {
		t.Errorf("map diff A B = %+v", d)
	}
	if r := c.must("map", "diff", after, after); !strings.Contains(r.stdout, "no differences") {
		t.Errorf("map diff of a file with itself:\n%s", r.stdout)
	}

	if r := c.must("map", "validate", "--file", after); !strings.Contains(r.stdout, "map epoch 2 is valid") {
		t.Errorf("map validate --file:\n%s", r.stdout)
	}
	broken := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(broken, []byte(`{"schema":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.fails(exitInvalid, []string{broken}, "map", "validate", "--file", broken); !strings.Contains(r.stdout, "schema 2") {
		t.Errorf("map validate --file of schema 2:\n%s", r.stdout)
	}
	c.fails(exitInvalid, []string{broken}, "map", "diff", before, broken)
	c.fails(exitUsage, []string{"no such file"}, "map", "diff", filepath.Join(dir, "missing.json"))

	// --from-file copies a map to another cluster, from a file or stdin.
	c.cluster = "copy"
	r = c.must("map", "init", "--from-file", after, "--reason", "copy of test")
	if !strings.Contains(r.stdout, "created the map of cluster copy at epoch 1") || !strings.Contains(r.stdout, "u42") {
		t.Errorf("map init --from-file:\n%s", r.stdout)
	}
	c.cluster = "stdin"
	c.stdin = c.must("map", "show", "-o", "json", "--cluster", "copy").stdout
	c.must("map", "init", "--from-file", "-", "--reason", "from stdin")
	c.stdin = ""
	c.fails(exitUsage, []string{"--from-file"}, "map", "init", "--from-file", after, "--cell", "x@Y", "--reason", "x")
	c.fails(exitInvalid, []string{broken}, "map", "init", "--from-file", broken, "--reason", "x", "--force")
}

// TestErrors checks exit codes and messages of what goes wrong at 3 a.m.
func TestErrors(t *testing.T) {
	t.Parallel()
	ep := startEtcd(t)
	c := newCtl(t, ep)

	c.fails(exitNotFound, []string{"no map", "map init"}, "map", "show")
	c.fails(exitNotFound, []string{"no map"}, "cell", "add", "x1", "--idc", "X", "--reason", "x")
	c.fails(exitUsage, []string{"--reason is required", "usage: cellctl map init"}, initArgs()...)
	c.fails(exitUsage, []string{"--reason is required"}, initArgs("--reason", "  ")...)
	c.must(initArgs("--reason", "first map")...)

	closed := closedPort(t)
	tests := []struct {
		name  string
		code  int
		wants []string
		args  []string
	}{
		{"missing reason", exitUsage, []string{"--reason is required", "usage: cellctl whitelist add"}, []string{"whitelist", "add", "u1", "--cell", "a1"}},
		{"missing reason set-state", exitUsage, []string{"--reason"}, []string{"cell", "set-state", "a1", "draining"}},
		{"missing reason rm", exitUsage, []string{"--reason"}, []string{"cell", "rm", "a1"}},
		{"unknown cell whitelist", exitNotFound, []string{`"zz"`, "unknown cell", "cell list"}, []string{"whitelist", "add", "u1", "--cell", "zz", "--reason", "x"}},
		{"unknown cell set-state", exitNotFound, []string{`"zz"`, "unknown cell"}, []string{"cell", "set-state", "zz", "fenced", "--reason", "x"}},
		{"unknown cell rm", exitNotFound, []string{`"zz"`}, []string{"cell", "rm", "zz", "--reason", "x"}},
		{"not whitelisted", exitNotFound, []string{`"u1"`, "not whitelisted"}, []string{"whitelist", "rm", "u1", "--reason", "x"}},
		{"bad state", exitUsage, []string{`"sleepy"`, "active, draining, fenced or offline"}, []string{"cell", "set-state", "a1", "sleepy", "--reason", "x"}},
		{"offline owner refused", exitInvalid, []string{"offline", "nothing was written"}, []string{"cell", "set-state", "a1", "offline", "--reason", "x"}},
		{"rm cell in use", exitInvalid, []string{"owns slots"}, []string{"cell", "rm", "a1", "--reason", "x"}},
		{"duplicate cell", exitConflict, []string{`"a1"`, "duplicate"}, []string{"cell", "add", "a1", "--idc", "IDC-A", "--reason", "x"}},
		{"bad cell id", exitUsage, []string{`"x_"`}, []string{"cell", "add", "x_", "--idc", "IDC-A", "--reason", "x"}},
		{"bad idc", exitUsage, []string{`"IDC A"`}, []string{"cell", "add", "c9", "--idc", "IDC A", "--reason", "x"}},
		{"missing idc", exitUsage, []string{"--idc is required"}, []string{"cell", "add", "c9", "--reason", "x"}},
		{"map exists", exitConflict, []string{"already exists", "--force"}, initArgs("--reason", "again")},
		{"bad -o", exitUsage, []string{`-o "xml"`, "table, json or yaml"}, []string{"map", "show", "-o", "xml"}},
		{"bad timeout", exitUsage, []string{"--timeout"}, []string{"map", "show", "--timeout", "0s"}},
		{"bad cluster", exitUsage, []string{"--cluster", `"Bad_Name"`}, []string{"map", "show", "--cluster", "Bad_Name"}},
		{"bad endpoint", exitUsage, []string{"--etcd", "ftp://x"}, []string{"map", "show", "--etcd", "ftp://x"}},
		{"bad slots", exitUsage, []string{"--slots 1000", "power of two"}, []string{"map", "init", "--slots", "1000", "--cell", "a@B", "--reason", "x"}},
		{"bad cell spec", exitUsage, []string{`--cell "a1"`, "ID@IDC"}, []string{"map", "init", "--cell", "a1", "--reason", "x"}},
		{"no cells", exitUsage, []string{"--cell"}, []string{"map", "init", "--reason", "x"}},
		{"endpoint of unknown cell", exitUsage, []string{`"zz"`}, initArgs("--endpoint", "zz=1.2.3.4:5", "--reason", "x")},
		{"unknown flag", exitUsage, []string{"unknown flag: --frobnicate", "usage: cellctl map show"}, []string{"map", "show", "--frobnicate"}},
		{"unknown command", exitUsage, []string{`unknown command "shw"`, `did you mean "show"`, "one of: diff, history, init, show, validate"}, []string{"map", "shw"}},
		{"unknown top command", exitUsage, []string{`unknown command "rout"`}, []string{"rout", "u1"}},
		{"no keys", exitUsage, []string{"at least one KEY"}, []string{"route"}},
		{"bad key", exitUsage, []string{"control character"}, []string{"route", "u\x01"}},
		{"pin an ID", exitUsage, []string{"slot-bearing ID"}, []string{"whitelist", "add", mustID(t), "--cell", "a1", "--reason", "x"}},
		{"too many args", exitUsage, []string{"want ID STATE"}, []string{"cell", "set-state", "a1", "active", "extra", "--reason", "x"}},
		{"negative limit", exitUsage, []string{"--limit"}, []string{"map", "history", "--limit", "-1"}},
		{"cert without key", exitUsage, []string{"--cert and --key"}, []string{"map", "show", "--cert", "x.pem"}},
		{"missing cacert", exitUsage, []string{"--cacert", "no such file"}, []string{"map", "show", "--cacert", "/nonexistent/ca.pem"}},
		{"unreachable", exitUnreachable, []string{"unreachable", "http://" + closed, "cellctl dev", "CELLKIT_ETCD"}, []string{"map", "show", "--etcd", closed, "--timeout", "1s"}},
		{"unreachable change", exitUnreachable, []string{"http://" + closed}, []string{"whitelist", "add", "u1", "--cell", "a1", "--reason", "x", "--etcd", "http://" + closed, "--timeout", "1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCtl(t, ep)
			c.fails(tt.code, tt.wants, tt.args...)
		})
	}
}

func mustID(t *testing.T) string {
	t.Helper()
	id, err := router.NewID("ord", "u1")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestEnvAndActor: environment variables stand in for flags, flags win, and
// the actor defaults to the etcd user.
func TestEnvAndActor(t *testing.T) {
	t.Parallel()
	ep := startEtcd(t)
	c := newCtl(t, ep)
	c.env = map[string]string{"CELLKIT_ETCD": strings.TrimPrefix(ep, "http://"), "CELLKIT_CLUSTER": "envcluster", "CELLKIT_ACTOR": "alice"}
	c.raw(initArgs("--reason", "from env")...)
	recs := decodeJSON[[]etcdstore.AuditRecord](t, c.raw("map", "history", "-o", "json").stdout)
	if len(recs) != 1 || recs[0].Who != "alice" {
		t.Fatalf("history in the env cluster = %+v", recs)
	}
	// --actor beats CELLKIT_ACTOR; --cluster beats CELLKIT_CLUSTER.
	c.raw("cell", "add", "c1", "--idc", "IDC-C", "--reason", "x", "--actor", "bob")
	if recs := decodeJSON[[]etcdstore.AuditRecord](t, c.raw("map", "history", "-o", "json", "--limit", "1").stdout); recs[0].Who != "bob" {
		t.Errorf("--actor bob: audit says %q", recs[0].Who)
	}
	if r := c.raw("map", "show", "--cluster", "other"); r.code != exitNotFound {
		t.Errorf("--cluster other: exit %d, want %d (no map there)", r.code, exitNotFound)
	}
	// A flag wins over the environment: a closed --etcd is unreachable.
	closed := closedPort(t)
	checkFailure(t, c.raw("map", "show", "--etcd", closed, "--timeout", "1s"), exitUnreachable, []string{closed}, nil)
}

// TestAuth: with etcd auth on, --user logs in, its name is the default
// actor, and a wrong password is an authentication error, not "unreachable".
func TestAuth(t *testing.T) {
	t.Parallel()
	ep := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	raw := rawClient(t, ep)
	for _, step := range []func() error{
		func() error { _, err := raw.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := raw.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := raw.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd auth: %v", err)
		}
	}
	c := newCtl(t, ep)
	r := c.raw(append([]string{"--etcd", ep, "--cluster", "auth", "--user", "root:rootpw"}, initArgs("--reason", "with auth")...)...)
	if r.code != 0 {
		t.Fatalf("map init with --user: exit %d: %s", r.code, r.stderr)
	}
	c.env = map[string]string{"CELLKIT_ETCD_PASSWORD": "rootpw"}
	recs := decodeJSON[[]etcdstore.AuditRecord](t, c.raw("--etcd", ep, "--cluster", "auth", "--user", "root", "map", "history", "-o", "json").stdout)
	if len(recs) != 1 || recs[0].Who != "root" {
		t.Errorf("actor with --user root = %+v, want root", recs)
	}
	r = c.raw("--etcd", ep, "--cluster", "auth", "--user", "root:wrong", "map", "show")
	checkFailure(t, r, exitError, []string{"authentication failed", "--user"}, nil)
}

// TestIDs: id new and id parse agree, and IDs route with their key.
func TestIDs(t *testing.T) {
	t.Parallel()
	c := newCtl(t, "http://127.0.0.1:1") // offline commands never dial
	minted := decodeJSON[[]idRow](t, c.must("id", "new", "--key", "u42", "--kind", "pay", "-n", "3", "-o", "json").stdout)
	if len(minted) != 3 {
		t.Fatalf("%d IDs, want 3", len(minted))
	}
	wantSlot := router.Slot("u42", 1024)
	var ids []string
	for i, m := range minted {
		if !strings.HasPrefix(m.ID, "pay_") || m.Key != "u42" || m.Slot != wantSlot || m.SlotCount != 1024 {
			t.Errorf("id new row %d = %+v, want kind pay, slot %d", i, m, wantSlot)
		}
		if i > 0 && m.ID <= minted[i-1].ID {
			t.Errorf("IDs not increasing: %s then %s", minted[i-1].ID, m.ID)
		}
		ids = append(ids, m.ID)
	}
	parsed := decodeJSON[[]idRow](t, c.must(append([]string{"id", "parse", "--slots", "4096", "-o", "json"}, ids...)...).stdout)
	for i, p := range parsed {
		m := minted[i]
		if p.ID != m.ID || p.Kind != "pay" || p.Time != m.Time || p.KeyHash != m.KeyHash || p.Slot != router.Slot("u42", 4096) || p.SlotCount != 4096 {
			t.Errorf("id parse %s = %+v, minted %+v", m.ID, p, m)
		}
		if _, err := time.Parse(time.RFC3339, p.Time); err != nil || !strings.Contains(p.Time, ".") {
			t.Errorf("time %q is not RFC 3339 with milliseconds", p.Time)
		}
		if p.KeyHash != fmt.Sprintf("%016x", router.Hash("u42")) {
			t.Errorf("key hash %s, want %016x", p.KeyHash, router.Hash("u42"))
		}
	}
	if r := c.must("id", "parse", ids[0]); !strings.Contains(r.stdout, fmt.Sprintf("%d of 1024", wantSlot)) {
		t.Errorf("id parse table:\n%s", r.stdout)
	}
	if r := c.must("id", "new", "--key", "u42"); !strings.Contains(r.stdout, "ord_") {
		t.Errorf("id new table:\n%s", r.stdout)
	}

	c.fails(exitUsage, []string{"malformed id", `"nope"`}, "id", "parse", "nope")
	tampered := ids[0][:len(ids[0])-1] + string("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(strings.IndexByte("0123456789ABCDEFGHJKMNPQRSTVWXYZ", ids[0][len(ids[0])-1])+1)%32])
	c.fails(exitUsage, []string{"check byte"}, "id", "parse", tampered)
	c.fails(exitUsage, []string{"--key is required"}, "id", "new")
	c.fails(exitUsage, []string{"--kind"}, "id", "new", "--key", "u1", "--kind", "Order")
	c.fails(exitUsage, []string{"-n 0"}, "id", "new", "--key", "u1", "-n", "0")
	c.fails(exitUsage, []string{"--slots 100", "power of two"}, "id", "parse", ids[0], "--slots", "100")
}

// TestDemo runs the tour end to end.
func TestDemo(t *testing.T) {
	t.Parallel()
	c := newCtl(t, "")
	r := c.raw("tour")
	if r.code != 0 {
		t.Fatalf("demo: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"etcd is serving at", "map epoch 1", "u42", "ord_", "Same slot, same cell",
		`whitelist "u42" -> b1`, "u42 moved from a2 (IDC-A) to b1 (IDC-B)", "why: demo: canary user u42", "etcd stopped", "removed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output does not mention %q", want)
		}
	}
	dir := regexp.MustCompile(`removed (\S+)`).FindStringSubmatch(r.stdout)
	if dir == nil {
		t.Fatal("demo does not say what it removed")
	}
	if _, err := os.Stat(dir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo left %s behind (stat: %v)", dir[1], err)
	}

	res := decodeJSON[demoResult](t, c.raw("tour", "-o", "json").stdout)
	if res.Canary == nil || res.Canary.Key != "u42" || res.Canary.ToIDC != "IDC-B" || res.Canary.OrderRoute.Cell != "b1" || len(res.Audit) != 2 || len(res.Steps) != len(demoSteps()) {
		t.Errorf("demo -o json = %+v", res)
	}
	// The data plane: four registered instances, every payment served by its
	// owner, and a request sent to the wrong cell refused without a write.
	if len(res.Instances) != 4 || res.Router == "" || len(res.Payments) != len(demoUsers) {
		t.Errorf("demo data plane: %d instances, router %q, %d payments", len(res.Instances), res.Router, len(res.Payments))
	}
	for _, p := range res.Payments {
		if p.ServedBy != p.Owner || p.Balance != 10 {
			t.Errorf("payment %+v not served by its owner exactly once", p)
		}
	}
	if f := res.Refusal; f == nil || f.Status != 421 || f.Code != "WRONG_CELL" || f.Owner != "b1" || f.Admitted != 0 {
		t.Errorf("wrong-cell refusal: %+v", res.Refusal)
	}
	for _, want := range []string{"-> HTTP 421 WRONG_CELL, owner b1", "no key written by two cells", "leases revoked"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output does not mention %q", want)
		}
	}
}

// TestDev runs `cellctl dev`, uses it from "another shell", and stops it
// as Ctrl-C would.
func TestDev(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:0"},
			func(string) (string, bool) { return "", false }, strings.NewReader(""), &out, &errb)
	}()
	exportRe := regexp.MustCompile(`export CELLKIT_ETCD=(\S+)`)
	eventually(t, "cellctl dev to print the export line", func() bool {
		select {
		case code := <-done:
			t.Fatalf("cellctl dev exited %d early: %s", code, errb.String())
		default:
		}
		return exportRe.MatchString(out.String())
	})
	ep := exportRe.FindStringSubmatch(out.String())[1]

	c := newCtl(t, "")
	c.env = map[string]string{"CELLKIT_ETCD": ep}
	if r := c.raw(initArgs("--reason", "from another shell")...); r.code != 0 {
		t.Fatalf("map init against cellctl dev: exit %d: %s", r.code, r.stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("cellctl dev exited %d after the interrupt: %s", code, errb.String())
		}
	case <-time.After(testTimeout):
		t.Fatal("cellctl dev did not stop after the interrupt")
	}
	if !strings.Contains(out.String(), "etcd stopped") || !strings.Contains(out.String(), dir) {
		t.Errorf("dev output:\n%s", out.String())
	}

	// The data survives a restart.
	ctx2, cancel2 := context.WithTimeout(context.Background(), testTimeout)
	defer cancel2()
	srv, err := etcdembed.Start(ctx2, etcdembed.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c.env["CELLKIT_ETCD"] = srv.ClientURL()
	if r := c.raw("map", "show"); r.code != 0 || !strings.Contains(r.stdout, "epoch    1") {
		t.Errorf("map show after restarting on the same data dir: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestDevPortBusy: a taken port is named, with a hint.
func TestDevPortBusy(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := newCtl(t, "")
	r := c.raw("dev", "--data-dir", t.TempDir(), "--listen", l.Addr().String(), "--peer", "127.0.0.1:0")
	checkFailure(t, r, exitError, []string{l.Addr().String(), "already in use", "another `cellctl dev`", "--listen"}, nil)

	r = c.raw("dev", "--data-dir", t.TempDir(), "--listen", "example.com:1")
	checkFailure(t, r, exitUsage, []string{"example.com"}, nil)
}

// TestHelp: --help documents the exit codes and exits 0; run (with the
// process environment) works as main calls it.
func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"Exit codes:", "3  etcd unreachable", "6  not found", "dev", "demo", "whitelist"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	c := newCtl(t, "")
	if r := c.raw("map"); r.code != 0 || !strings.Contains(r.stdout, "validate") {
		t.Errorf("cellctl map: exit %d\n%s", r.code, r.stdout)
	}
}

// TestExitCodes maps typed errors to exit codes.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	corrupt := &etcdstore.CorruptMapError{Key: "/cellkit/x/map", Revision: 3, Err: &router.ValidationError{Problems: []string{"p"}}}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", errors.New("boom"), exitError},
		{"interrupted", context.Canceled, exitError},
		{"usage", usagef("bad"), exitUsage},
		{"no reason", etcdstore.ErrNoReason, exitUsage},
		{"bad config", fmt.Errorf("x: %w", etcdstore.ErrBadConfig), exitUsage},
		{"bad slot range", fmt.Errorf("x: %w", router.ErrBadSlotRange), exitUsage},
		{"bad slot count", fmt.Errorf("x: %w", router.ErrBadSlotCount), exitUsage},
		{"bad key", router.ErrBadKey, exitUsage},
		{"bad cell", router.ErrBadCell, exitUsage},
		{"malformed id", &router.IDError{ID: "x", Reason: "y"}, exitUsage},
		{"unreachable", &etcdstore.UnreachableError{Endpoints: []string{"http://x:1"}, Err: context.DeadlineExceeded}, exitUnreachable},
		{"conflict", fmt.Errorf("x: %w", etcdstore.ErrConflict), exitConflict},
		{"map exists", fmt.Errorf("x: %w", etcdstore.ErrMapExists), exitConflict},
		{"duplicate cell", router.ErrDuplicateCell, exitConflict},
		{"corrupt map", corrupt, exitInvalid},
		{"corrupt map wrapped", fmt.Errorf("x: %w", corrupt), exitInvalid},
		{"validation refused", fmt.Errorf("refused: %w", &router.ValidationError{}), exitInvalid},
		{"malformed map", fmt.Errorf("x: %w", router.ErrMalformedMap), exitInvalid},
		{"schema", router.ErrUnsupportedSchema, exitInvalid},
		{"cell in use", router.ErrCellInUse, exitInvalid},
		{"validate verdict", errMapInvalid, exitInvalid},
		{"no map", etcdstore.ErrNoMap, exitNotFound},
		{"unknown cell", fmt.Errorf("x: %w", router.ErrUnknownCell), exitNotFound},
		{"not whitelisted", router.ErrNotWhitelisted, exitNotFound},
		{"usage wrapping a router sentinel", asUsage(router.ErrUnknownCell), exitUsage},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestFrozen: a map with frozen slots and keys (as a cutover leaves it) is
// shown, routed and validated with the cutover named.
func TestFrozen(t *testing.T) {
	t.Parallel()
	c := newCtl(t, startEtcd(t))
	tbl, err := router.NewTable(256)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		tbl.AddCell(router.Cell{ID: "a1", IDC: "IDC-A", State: router.StateActive}),
		tbl.AddCell(router.Cell{ID: "b1", IDC: "IDC-B", State: router.StateDraining}),
		tbl.Assign(router.SlotRange{First: 0, Last: 127}, "a1"),
		tbl.Assign(router.SlotRange{First: 128, Last: 255}, "b1"),
		tbl.SetWhitelist("u42", "b1"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	slot := router.Slot("u7", 256)
	if err := tbl.Freeze(router.SlotRange{First: slot, Last: slot}, "drill-7"); err != nil {
		t.Fatal(err)
	}
	if err := tbl.FreezeKey("u42", "canary-1"); err != nil {
		t.Fatal(err)
	}
	doc, err := router.Encode(tbl)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "frozen.json")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	c.must("map", "init", "--from-file", file, "--reason", "mid-drill snapshot")

	routes := decodeJSON[[]routeRow](t, c.must("route", "u7", "u42", "-o", "json").stdout)
	if r := routes[0]; !r.Frozen || r.Cutover != "drill-7" || r.Slot != slot || r.Whitelisted {
		t.Errorf("route u7 = %+v, want frozen by drill-7", r)
	}
	if r := routes[1]; !r.Frozen || r.Cutover != "canary-1" || !r.Whitelisted || r.Cell != "b1" || r.State != "draining" {
		t.Errorf("route u42 = %+v, want whitelisted to b1, frozen by canary-1", r)
	}
	if r := c.must("route", "u7"); !strings.Contains(r.stdout, "yes (cutover drill-7)") {
		t.Errorf("route table:\n%s", r.stdout)
	}
	r := c.must("map", "show")
	for _, want := range []string{"FROZEN SLOTS", "drill-7", "FROZEN KEY", "canary-1", "WHITELISTED KEY"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("map show does not mention %q:\n%s", want, r.stdout)
		}
	}
	if r := c.must("map", "validate"); !strings.Contains(r.stdout, "1 slot and 1 key frozen") {
		t.Errorf("map validate:\n%s", r.stdout)
	}
}
