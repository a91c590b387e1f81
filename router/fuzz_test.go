package router

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func FuzzDecode(f *testing.F) {
	id := mustID(f, "ord", t0.UnixMilli(), Hash("u1"), 1)
	for _, doc := range []string{
		baseDoc("", ""),
		baseDoc(`[{"first":128,"last":255,"cell":"b1"},{"first":0,"last":127,"cell":"a1"}]`, ""),
		baseDoc("", `,"frozen":[{"first":0,"last":9,"cutover":"c"}],"frozenKeys":[{"key":"u1","cutover":"c"}],"whitelist":[{"key":"用户","cell":"b1"}]`),
		baseDoc("", `,"whitelist":[{"key":"`+id+`","cell":"a1"}]`),
		baseDoc("", `,"whitelist":[{"key":"u1","cell":"a1"},{"key":"u1","cell":"b1"}]`),
		baseDoc(`[{"first":0,"last":130,"cell":"a1"},{"first":128,"last":255,"cell":"b1"}]`, ""),
		baseDoc(`[{"first":0,"last":127,"cell":"a1"}]`, ""),
		baseDoc("", `,"bogus":1`),
		baseDoc("", "") + " {}",
		`{"schema":2}`, `{"schema":1}`, `{}`, `null`, `[]`, ``, `{"schema":1,`,
		strings.Replace(baseDoc("", ""), `"state":"active"}]`, `"state":"offline"}]`, 1),
	} {
		f.Add([]byte(doc))
	}
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 4; i++ {
		f.Add(mustEncode(f, randTable(f, r)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := Decode(data)
		if err != nil {
			if tb != nil {
				t.Fatal("table and error")
			}
			if !errors.Is(err, ErrMalformedMap) && !errors.Is(err, ErrUnsupportedSchema) && !errors.Is(err, ErrInvalidTable) {
				t.Fatalf("error %v matches none of the codec's sentinels", err)
			}
			return
		}
		if !tb.Sealed() || tb.Validate() != nil {
			t.Fatal("Decode returned an unsealed or invalid table")
		}
		enc, err := Encode(tb)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(doc))): %v\ndoc %q\nenc %s", err, data, enc)
		}
		enc2 := mustEncode(t, again)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, enc2)
		}
		if d := Compare(tb, again); !d.Empty() {
			t.Fatalf("round trip changed the table: %q", d.Lines())
		}
		for _, e := range tb.Whitelist() {
			if r := again.Lookup(e.Key); !r.Whitelisted || r.Cell.ID != e.Cell {
				t.Fatalf("whitelisted %q lost in the round trip: %+v", e.Key, r)
			}
		}
	})
}

func FuzzParseID(f *testing.F) {
	good := mustID(f, "ord", t0.UnixMilli(), Hash("u42"), 99)
	for _, s := range []string{
		good, spoil(good), strings.ToLower(good), good[:len(good)-1], good + "0",
		mustID(f, "abcdefgh", maxIDMillis, ^uint64(0), entropyMask), mustID(f, "a", 0, 0, 0),
		"", "_", "ord_", "a_" + strings.Repeat("0", 32), "toolongki_" + strings.Repeat("Z", 32),
		"ord_" + strings.Repeat("\xff", 32), "ORD_" + good[4:],
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		info, err := ParseID(s)
		h, ok := idHash(s)
		if (err == nil) != ok {
			t.Fatalf("ParseID(%q) err = %v but idHash ok = %v", s, err, ok)
		}
		if err != nil {
			var ie *IDError
			if !errors.Is(err, ErrMalformedID) || !errors.As(err, &ie) || ie.ID != s {
				t.Fatalf("ParseID(%q): %v is not an *IDError for the input", s, err)
			}
			if KeyHash(s) != Hash(s) {
				t.Fatalf("%q is not an ID but does not route by its own hash", s)
			}
			return
		}
		if h != info.KeyHash || KeyHash(s) != h {
			t.Fatalf("%q: idHash %x, ParseID %x, KeyHash %x", s, h, info.KeyHash, KeyHash(s))
		}
		again, err := FormatID(info.Kind, info.Time.UnixMilli(), info.KeyHash, info.Entropy)
		if err != nil || again != s {
			t.Fatalf("FormatID(ParseID(%q)) = %q, %v", s, again, err)
		}
		if slot, err := SlotOf(s, 1024); err != nil || slot != int(h%1024) {
			t.Fatalf("SlotOf(%q) = %d, %v", s, slot, err)
		}
	})
}

func FuzzLookup(f *testing.F) {
	tb := newTestTable(f)
	must(f, tb.SetWhitelist("vip", "c1"))
	must(f, tb.FreezeKey("moving", "cut-k"))
	must(f, tb.Freeze(SlotRange{100, 199}, "cut-s"))
	tb.Seal()
	for _, k := range []string{"", "vip", "moving", "u1", mustID(f, "ord", 1, Hash("vip"), 1), mustID(f, "ord", 1, Hash("moving"), 1), "ord_x"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r := tb.Lookup(key)
		h := KeyHash(key)
		slot := int(h % 1024)
		// The rule, spelled out: an ID matches pinned keys by the hash it
		// carries, anything else by exact key.
		pinned, frozenKey := key == "vip", key == "moving"
		if info, err := ParseID(key); err == nil {
			if info.KeyHash != h {
				t.Fatalf("KeyHash(%q) = %x, ParseID says %x", key, h, info.KeyHash)
			}
			pinned, frozenKey = h == Hash("vip"), h == Hash("moving")
		} else if h != Hash(key) {
			t.Fatalf("non-ID %q does not route by its own hash", key)
		}
		wantCell := tb.SlotOwner(slot)
		if pinned {
			wantCell = "c1"
		}
		wantFrozen := frozenKey || !pinned && slot >= 100 && slot <= 199
		if r.Slot != slot || r.Cell == nil || r.Cell.ID != wantCell || r.Whitelisted != pinned || r.Frozen != wantFrozen || r.Epoch != 7 {
			t.Fatalf("Lookup(%q) = %+v cell %v; want slot %d cell %s pinned %v frozen %v", key, r, r.Cell, slot, wantCell, pinned, wantFrozen)
		}
	})
}
