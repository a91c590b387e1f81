package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

var randKeyRunes = []rune("abcxyz0189-_ .:/用户ユé🙂\"\\<>&\u2028")

func randKey(r *rand.Rand) string {
	var b strings.Builder
	n := 1 + r.IntN(24)
	for i := 0; i < n; i++ {
		b.WriteRune(randKeyRunes[r.IntN(len(randKeyRunes))])
	}
	return b.String()
}

// randTable builds a valid table: random slot count, 1-6 cells in random
// states (offline ones own nothing), random owner runs, freezes, frozen keys
// and whitelist.
func randTable(t testing.TB, r *rand.Rand) *Table {
	t.Helper()
	n := MinSlotCount << r.IntN(9)
	tb, err := NewTable(n)
	must(t, err)
	tb.SetEpoch(r.Uint64N(1 << 62))
	ncells := 1 + r.IntN(6)
	var owners []string
	for i := 0; i < ncells; i++ {
		c := Cell{ID: fmt.Sprintf("c%d-%s", i, []string{"a", "b.x", "C_9"}[r.IntN(3)]), IDC: fmt.Sprintf("idc-%d", r.IntN(3))}
		c.State = []CellState{StateActive, StateActive, StateDraining, StateFenced, StateOffline}[r.IntN(5)]
		if i == 0 && c.State == StateOffline {
			c.State = StateActive
		}
		for j := r.IntN(3); j > 0; j-- {
			c.Endpoints = append(c.Endpoints, fmt.Sprintf("10.0.%d.%d:%d", i, j, 9000+j))
		}
		must(t, tb.AddCell(c))
		if c.State != StateOffline {
			owners = append(owners, c.ID)
		}
	}
	for s := 0; s < n; {
		run := 1 + r.IntN(max(1, n/4))
		if r.IntN(4) == 0 {
			run = 1
		}
		last := min(n-1, s+run-1)
		must(t, tb.Assign(SlotRange{s, last}, owners[r.IntN(len(owners))]))
		s = last + 1
	}
	cutovers := []string{"cut-1", "cut-2", "drill", "☃"}
	for i := r.IntN(4); i > 0; i-- {
		first := r.IntN(n)
		last := min(n-1, first+r.IntN(64))
		must(t, tb.Freeze(SlotRange{first, last}, cutovers[r.IntN(len(cutovers))]))
	}
	if r.IntN(3) == 0 && len(tb.FrozenRanges()) > 0 {
		fr := tb.FrozenRanges()[0]
		must(t, tb.Unfreeze(fr.SlotRange))
	}
	for i := r.IntN(5); i > 0; i-- {
		must(t, tb.FreezeKey(randKey(r), cutovers[r.IntN(len(cutovers))]))
	}
	for i := r.IntN(20); i > 0; i-- {
		must(t, tb.SetWhitelist(randKey(r), owners[r.IntN(len(owners))]))
	}
	if err := tb.Validate(); err != nil {
		t.Fatalf("randTable built an invalid table: %v", err)
	}
	return tb
}

func TestCodecRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 1))
	for i := 0; i < 300; i++ {
		tb := randTable(t, r)
		enc1 := mustEncode(t, tb)
		dec, err := Decode(enc1)
		if err != nil {
			t.Fatalf("table %d: Decode(Encode(t)): %v\n%s", i, err, enc1)
		}
		if !dec.Sealed() {
			t.Fatal("Decode returned a mutable table")
		}
		enc2 := mustEncode(t, dec)
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("table %d: Encode(Decode(Encode(t))) differs:\n%s\n%s", i, enc1, enc2)
		}
		if d := Compare(tb, dec); !d.Empty() || dec.Epoch() != tb.Epoch() || dec.SlotCount() != tb.SlotCount() {
			t.Fatalf("table %d: decoded table differs: %q", i, d.Lines())
		}
		// Same routing for whitelisted, frozen and random keys.
		var keys []string
		for _, e := range tb.Whitelist() {
			keys = append(keys, e.Key)
		}
		for _, e := range tb.FrozenKeys() {
			keys = append(keys, e.Key)
		}
		for j := 0; j < 20; j++ {
			keys = append(keys, randKey(r))
		}
		for _, k := range keys {
			a, b := tb.Lookup(k), dec.Lookup(k)
			if a.Cell.ID != b.Cell.ID || a.Frozen != b.Frozen || a.Cutover != b.Cutover || a.Whitelisted != b.Whitelisted || a.Slot != b.Slot {
				t.Fatalf("table %d: Lookup(%q) = %+v before, %+v after", i, k, a, b)
			}
		}
		// json.Marshal agrees with Encode.
		if viaJSON, err := json.Marshal(dec); err != nil || !bytes.Equal(viaJSON, enc1) {
			t.Fatalf("json.Marshal: %v", err)
		}
	}
}

func TestCodecMaxSlotsAlternating(t *testing.T) {
	tb, _ := NewTable(MaxSlotCount)
	must(t, tb.AddCell(Cell{ID: "a1", IDC: "idc-a"}))
	must(t, tb.AddCell(Cell{ID: "b1", IDC: "idc-b"}))
	for s := 0; s < MaxSlotCount; s++ {
		must(t, tb.Assign(SlotRange{s, s}, []string{"a1", "b1"}[s%2]))
	}
	enc := mustEncode(t, tb)
	if len(enc) > MaxDocumentSize {
		t.Fatalf("worst-case 65536-slot document is %d bytes, over the %d limit", len(enc), MaxDocumentSize)
	}
	t.Logf("worst-case 65536-slot document: %d bytes", len(enc))
	dec, err := Decode(enc)
	must(t, err)
	if !bytes.Equal(mustEncode(t, dec), enc) {
		t.Fatal("65536-slot round trip differs")
	}
	for _, s := range []int{0, 1, 4097, 65534, 65535} {
		if want := []string{"a1", "b1"}[s%2]; dec.SlotOwner(s) != want {
			t.Fatalf("slot %d owner %q, want %s", s, dec.SlotOwner(s), want)
		}
	}
}

func TestCodecCompact(t *testing.T) {
	tb, _ := NewTable(1024)
	must(t, tb.AddCell(Cell{ID: "a1", IDC: "idc-a", Endpoints: []string{"10.0.0.1:9000"}}))
	must(t, tb.AddCell(Cell{ID: "b1", IDC: "idc-b", Endpoints: []string{"10.0.1.1:9000"}}))
	must(t, tb.Assign(SlotRange{0, 511}, "a1"))
	must(t, tb.Assign(SlotRange{512, 1023}, "b1"))
	enc := mustEncode(t, tb)
	if len(enc) >= 1024 {
		t.Fatalf("1024-slot 2-cell document is %d bytes, want < 1 KiB:\n%s", len(enc), enc)
	}
	want := `{"schema":1,"epoch":0,"slotCount":1024,"cells":[{"id":"a1","idc":"idc-a","state":"active","endpoints":["10.0.0.1:9000"]},` +
		`{"id":"b1","idc":"idc-b","state":"active","endpoints":["10.0.1.1:9000"]}],"slots":[{"first":0,"last":511,"cell":"a1"},{"first":512,"last":1023,"cell":"b1"}]}`
	if string(enc) != want {
		t.Fatalf("document:\n%s\nwant\n%s", enc, want)
	}
}

func TestCodecDeterministic(t *testing.T) {
	// Insertion order does not show in the document.
	build := func(order []int) []byte {
		tb, _ := NewTable(256)
		for _, i := range order {
			must(t, tb.AddCell(Cell{ID: fmt.Sprintf("c%d", i), IDC: "x"}))
		}
		must(t, tb.Assign(SlotRange{0, 255}, "c0"))
		for _, i := range order {
			must(t, tb.SetWhitelist(fmt.Sprintf("k%d", i), fmt.Sprintf("c%d", i)))
			must(t, tb.FreezeKey(fmt.Sprintf("f%d", i), "cut"))
		}
		return mustEncode(t, tb)
	}
	a, b := build([]int{0, 1, 2, 3}), build([]int{3, 1, 0, 2})
	if !bytes.Equal(a, b) {
		t.Fatalf("encoding depends on insertion order:\n%s\n%s", a, b)
	}
}

// baseDoc is a valid 256-slot document with the given extra top-level text
// spliced in before the closing brace.
func baseDoc(slots string, extra string) string {
	if slots == "" {
		slots = `[{"first":0,"last":127,"cell":"a1"},{"first":128,"last":255,"cell":"b1"}]`
	}
	return `{"schema":1,"epoch":3,"slotCount":256,"cells":[{"id":"a1","idc":"x","state":"active"},{"id":"b1","idc":"y","state":"active"}],` +
		`"slots":` + slots + extra + `}`
}

func TestDecodeRejects(t *testing.T) {
	if _, err := Decode([]byte(baseDoc("", ""))); err != nil {
		t.Fatalf("base document: %v", err)
	}
	id := mustID(t, "ord", t0.UnixMilli(), Hash("u1"), 1)
	cases := []struct {
		name   string
		doc    string
		target error
		subs   []string
	}{
		{"invalid JSON", `{"schema":1,`, ErrMalformedMap, []string{"not a JSON object"}},
		{"not an object", `[1,2]`, ErrMalformedMap, []string{"not a JSON object"}},
		{"empty", ``, ErrMalformedMap, []string{"not a JSON object"}},
		{"null", `null`, ErrMalformedMap, []string{`no "schema" field`}},
		{"missing schema", `{"epoch":1,"slotCount":256}`, ErrMalformedMap, []string{`no "schema" field`}},
		{"schema not a number", `{"schema":"1"}`, ErrMalformedMap, []string{`"schema" is not an integer`}},
		{"schema 2", `{"schema":2,"whatever":true}`, ErrUnsupportedSchema, []string{"schema 2", "reads schema 1"}},
		{"schema 0", `{"schema":0}`, ErrUnsupportedSchema, []string{"schema 0"}},
		{"unknown field", baseDoc("", `,"bogus":1`), ErrMalformedMap, []string{`unknown field "bogus"`}},
		{"unknown cell field", strings.Replace(baseDoc("", ""), `"state":"active"}`, `"state":"active","weight":3}`, 1), ErrMalformedMap, []string{`unknown field "weight"`}},
		{"wrong type", strings.Replace(baseDoc("", ""), `"epoch":3`, `"epoch":"3"`, 1), ErrMalformedMap, []string{`"epoch"`}},
		{"negative epoch", strings.Replace(baseDoc("", ""), `"epoch":3`, `"epoch":-3`, 1), ErrMalformedMap, []string{`"epoch"`}},
		{"trailing data", baseDoc("", "") + ` {"schema":1}`, ErrMalformedMap, []string{"trailing data"}},
		{"trailing garbage", baseDoc("", "") + `x`, ErrMalformedMap, []string{"trailing data"}},
		{"bad slot count", strings.Replace(baseDoc("", ""), `"slotCount":256`, `"slotCount":1000`, 1), ErrMalformedMap, []string{"slotCount 1000"}},
		{"zero slot count", strings.Replace(baseDoc("", ""), `"slotCount":256`, `"slotCount":0`, 1), ErrMalformedMap, []string{"slotCount 0"}},
		{"duplicate cell", strings.Replace(baseDoc("", ""), `"id":"b1"`, `"id":"a1"`, 1), ErrMalformedMap, []string{`"a1"`, "duplicate cell"}},
		{"bad cell id", strings.Replace(baseDoc("", ""), `"id":"b1"`, `"id":"b 1"`, 1), ErrMalformedMap, []string{`cell id "b 1"`}},
		{"cell without state", strings.Replace(baseDoc("", ""), `,"state":"active"}]`, `}]`, 1), ErrMalformedMap, []string{`cell "b1" has no state`}},
		{"bad cell state", strings.Replace(baseDoc("", ""), `"state":"active"}]`, `"state":"up"}]`, 1), ErrMalformedMap, []string{`state "up"`}},
		{"overlapping ranges", baseDoc(`[{"first":0,"last":130,"cell":"a1"},{"first":128,"last":255,"cell":"b1"}]`, ""), ErrMalformedMap, []string{"slot 128 assigned twice"}},
		{"range out of bounds", baseDoc(`[{"first":0,"last":127,"cell":"a1"},{"first":128,"last":256,"cell":"b1"}]`, ""), ErrMalformedMap, []string{"slots 128-256", "outside 0-255"}},
		{"reversed range", baseDoc(`[{"first":127,"last":0,"cell":"a1"},{"first":128,"last":255,"cell":"b1"}]`, ""), ErrMalformedMap, []string{"slots 127-0"}},
		{"negative range", baseDoc(`[{"first":-1,"last":127,"cell":"a1"},{"first":128,"last":255,"cell":"b1"}]`, ""), ErrMalformedMap, []string{"slots -1-127"}},
		{"unknown cell in slots", baseDoc(`[{"first":0,"last":127,"cell":"a1"},{"first":128,"last":255,"cell":"zz"}]`, ""), ErrMalformedMap, []string{"slots 128-255", `"zz"`, "unknown cell"}},
		{"frozen twice", baseDoc("", `,"frozen":[{"first":0,"last":9,"cutover":"c"},{"first":9,"last":9,"cutover":"d"}]`), ErrMalformedMap, []string{"slot 9 frozen twice"}},
		{"frozen out of bounds", baseDoc("", `,"frozen":[{"first":250,"last":300,"cutover":"c"}]`), ErrMalformedMap, []string{"frozen 250-300", "outside"}},
		{"frozen bad cutover", baseDoc("", `,"frozen":[{"first":1,"last":3,"cutover":""}]`), ErrMalformedMap, []string{"frozen 1-3", "cutover name"}},
		{"frozen key twice", baseDoc("", `,"frozenKeys":[{"key":"u1","cutover":"c"},{"key":"u1","cutover":"c"}]`), ErrMalformedMap, []string{`frozen key "u1" listed twice`}},
		{"frozen key empty", baseDoc("", `,"frozenKeys":[{"key":"","cutover":"c"}]`), ErrMalformedMap, []string{"empty key"}},
		{"whitelist twice", baseDoc("", `,"whitelist":[{"key":"u1","cell":"a1"},{"key":"u1","cell":"b1"}]`), ErrMalformedMap, []string{`whitelisted key "u1" listed twice`}},
		{"whitelist to unknown cell", baseDoc("", `,"whitelist":[{"key":"u1","cell":"zz"}]`), ErrMalformedMap, []string{`"zz"`, "unknown cell"}},
		{"whitelist bad key", baseDoc("", `,"whitelist":[{"key":"a\u0001","cell":"a1"}]`), ErrMalformedMap, []string{"control character"}},
		{"whitelist an ID", baseDoc("", `,"whitelist":[{"key":"`+id+`","cell":"a1"}]`), ErrMalformedMap, []string{"slot-bearing ID"}},
		{"too big", `{"schema":1,"cells":[` + strings.Repeat(" ", MaxDocumentSize) + `]}`, ErrMalformedMap, []string{"more than 4194304"}},
		{"unowned slots", baseDoc(`[{"first":0,"last":127,"cell":"a1"},{"first":130,"last":255,"cell":"b1"}]`, ""), ErrInvalidTable, []string{"slots 128-129 have no owner"}},
		{"no slots at all", baseDoc(`[]`, ""), ErrInvalidTable, []string{"slots 0-255 have no owner"}},
		{"offline owner", strings.Replace(baseDoc("", ""), `"state":"active"}]`, `"state":"offline"}]`, 1), ErrInvalidTable, []string{`offline cell "b1"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb, err := Decode([]byte(c.doc))
			if tb != nil {
				t.Fatal("Decode returned a table with an error")
			}
			wantErr(t, err, c.target, c.subs...)
			var ve *ValidationError
			if isVE := errors.As(err, &ve); isVE != (c.target == ErrInvalidTable) {
				t.Fatalf("%v: *ValidationError = %v, want %v", err, isVE, c.target == ErrInvalidTable)
			}
			for _, other := range []error{ErrMalformedMap, ErrUnsupportedSchema, ErrInvalidTable} {
				if other != c.target && errors.Is(err, other) {
					t.Fatalf("%v is also %v", err, other)
				}
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, doc := range []string{
		// Ranges in any order and whitespace around the document.
		" \n" + baseDoc(`[{"first":128,"last":255,"cell":"b1"},{"first":0,"last":127,"cell":"a1"}]`, "") + "\n",
		baseDoc("", `,"frozen":[],"frozenKeys":[],"whitelist":[]`),
		baseDoc("", `,"whitelist":[{"key":"用户 1","cell":"b1"}],"frozenKeys":[{"key":"用户 1","cutover":"c"}]`),
	} {
		tb, err := Decode([]byte(doc))
		if err != nil {
			t.Fatalf("Decode(%s): %v", doc, err)
		}
		again, err := Decode(mustEncode(t, tb))
		if err != nil || !bytes.Equal(mustEncode(t, again), mustEncode(t, tb)) {
			t.Fatalf("round trip of %s: %v", doc, err)
		}
	}
}
