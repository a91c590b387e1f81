package router

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata/ instead of comparing")

// The vector files are the contract for SDKs in other languages. The router
// code generates them; the checks in this file read them back and verify them
// with an independent XXH64 (refXXH64) and base32 decoder, so a change to the
// routing rule cannot slip through a -rewrite unnoticed.

type slotVector struct {
	Key       string `json:"key"`
	XXH64     string `json:"xxh64"` // 16 lower-case hex digits
	Slot256   int    `json:"slot256"`
	Slot1024  int    `json:"slot1024"`
	Slot65536 int    `json:"slot65536"`
}

type idVector struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Key      string `json:"key"` // the key the ID was minted for
	UnixMs   int64  `json:"unixMs"`
	KeyHash  string `json:"keyHash"` // xxh64 of key, 16 hex digits
	Entropy  uint64 `json:"entropy"`
	BodyHex  string `json:"bodyHex"` // the 20 bytes the body encodes
	Slot1024 int    `json:"slot1024"`
}

type malformedIDVector struct {
	ID     string `json:"id"`
	Reason string `json:"reason"` // a substring of ParseID's message
}

type notIDVector struct {
	Key      string `json:"key"`
	Why      string `json:"why"`
	XXH64    string `json:"xxh64"` // it routes by its own hash
	Slot1024 int    `json:"slot1024"`
}

type idVectors struct {
	Comment   string              `json:"comment"`
	IDs       []idVector          `json:"ids"`
	Malformed []malformedIDVector `json:"malformed"`
	NotIDs    []notIDVector       `json:"notIDs"`
}

var slotVectorKeys = []string{
	"", "a", "abc", "u0", "u42", "u999", "user-1", "user-12345", "user-1000000", "user-18446744073709551615",
	"1234567", "12345678", "123456789", // around the 8-byte lane
	strings.Repeat("k", 31), strings.Repeat("k", 32), strings.Repeat("k", 33), // around the 32-byte stripe
	strings.Repeat("0123456789", 30), // 300 bytes
	"user with spaces", " leading", "trailing ", "tab\there",
	"用户-42", "ユーザー42", "é", "e\u0301", "emoji-🙂", "UPPER-Case",
	`quote"back\slash`, "<html>&amp;", "ord_lowercase",
}

func hex16(h uint64) string { return fmt.Sprintf("%016x", h) }

func genSlotVectors() []slotVector {
	var out []slotVector
	for _, k := range slotVectorKeys {
		out = append(out, slotVector{k, hex16(Hash(k)), Slot(k, 256), Slot(k, 1024), Slot(k, 65536)})
	}
	return out
}

func genIDVectors(t *testing.T) idVectors {
	t.Helper()
	v := idVectors{Comment: "cellkit slot-bearing IDs: <kind>_<32 Crockford base32 chars> encoding 20 bytes big-endian: " +
		"0-5 unix ms, 6-10 entropy (40 bits), 11-18 xxh64(key) seed 0, 19 low byte of xxh64(bytes 0-18). " +
		"An ID routes by the hash it carries; any other string, malformed IDs included, by xxh64 of its own bytes."}
	inputs := []struct {
		kind, key string
		ms        int64
		ent       uint64
	}{
		{"ord", "u42", 1700000000000, 1},
		{"pay", "user-1000000", 1700000000123, 0x123456789a},
		{"ref", "用户-42", 0, 0},
		{"x", "a", maxIDMillis, entropyMask},
		{"abcdefgh", "user with spaces", 1735689600000, 42},
		{"o1", strings.Repeat("0123456789", 30), 1767225599999, 1 << 39},
	}
	for _, in := range inputs {
		id := mustID(t, in.kind, in.ms, Hash(in.key), in.ent)
		var b [20]byte
		decodeBody(&b, id[len(in.kind)+1:])
		v.IDs = append(v.IDs, idVector{id, in.kind, in.key, in.ms, hex16(Hash(in.key)), in.ent,
			fmt.Sprintf("%x", b[:]), Slot(in.key, 1024)})
	}

	good := v.IDs[0].ID // ord_...
	body := good[4:]
	malformed := []malformedIDVector{
		{"", "empty"},
		{"ord", "want <kind>_<32 base32 characters>"},
		{"ord_", "body has 0 characters, want 32"},
		{"_" + body, `kind "" must be 1-8 characters`},
		{"Ord_" + body, `kind "Ord" must be 1-8 characters`},
		{"1rd_" + body, `kind "1rd" must be 1-8 characters`},
		{"or-d_" + body, `kind "or-d" must be 1-8 characters`},
		{" " + good, `kind " ord" must be 1-8 characters`},
		{"toolongkd_" + body, "want <kind>_<32 base32 characters>"},
		{"ord-" + body, "want <kind>_<32 base32 characters>"},
		{"ord_" + body[:31], "body has 31 characters, want 32"},
		{"ord_" + body + "0", "body has 33 characters, want 32"},
		{"ord_" + strings.ToLower(body), "is not Crockford base32"},
		{"ord_" + body[:10] + "I" + body[11:], "character 'I' at position 14 is not Crockford base32"},
		{"ord_" + body[:10] + "L" + body[11:], "character 'L' at position 14"},
		{"ord_" + body[:10] + "O" + body[11:], "character 'O' at position 14"},
		{"ord_" + body[:10] + "U" + body[11:], "character 'U' at position 14"},
		{"ord_" + body[:10] + " " + body[11:], "character ' ' at position 14"},
		{spoil(good), "does not match"},
		{"ord_" + body[1:] + body[:1], "does not match"},
	}
	for _, m := range malformed {
		if _, err := ParseID(m.ID); err == nil || !strings.Contains(err.Error(), m.Reason) {
			t.Fatalf("ParseID(%q) = %v, want an error saying %q", m.ID, err, m.Reason)
		}
	}
	v.Malformed = malformed

	notIDs := []struct{ key, why string }{
		{spoil(good), "check byte does not match"},
		{"ord_" + strings.ToLower(body), "lower-case body"},
		{"ord_" + body[:31], "body one character short"},
		{"ORD_" + body, "upper-case kind"},
		{good + " ", "trailing space"},
		{"ord_" + strings.Repeat("0", 32), "all zero body: check byte of zeros is not zero"},
	}
	for _, n := range notIDs {
		v.NotIDs = append(v.NotIDs, notIDVector{n.key, n.why, hex16(Hash(n.key)), Slot(n.key, 1024)})
	}
	return v
}

// golden compares data with testdata/name, or writes it with -rewrite.
func golden(t *testing.T, name string, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *rewrite {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./router -run Golden -rewrite)", err)
	}
	if !bytes.Equal(have, buf.Bytes()) {
		t.Errorf("%s disagrees with the code: SDK vectors changed.\n"+
			"If the routing rule really changed, every SDK must change too; rerun with -rewrite.\n--- file\n%s\n--- code\n%s",
			path, firstDiff(have, buf.Bytes()), firstDiff(buf.Bytes(), have))
	}
	return have
}

// firstDiff shows the line of a where it first differs from b.
func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range la {
		if i >= len(lb) || la[i] != lb[i] {
			return fmt.Sprintf("line %d: %s", i+1, la[i])
		}
	}
	return "(prefix of the other)"
}

func TestGoldenSlots(t *testing.T) {
	data := golden(t, "slots.json", genSlotVectors())
	var vs []slotVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 20 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		h := refXXH64([]byte(v.Key))
		if v.XXH64 != hex16(h) {
			t.Errorf("%q: file says xxh64 %s, reference says %016x", v.Key, v.XXH64, h)
		}
		if v.Slot256 != int(h%256) || v.Slot1024 != int(h%1024) || v.Slot65536 != int(h%65536) {
			t.Errorf("%q: file slots %d/%d/%d, want xxh64 mod n", v.Key, v.Slot256, v.Slot1024, v.Slot65536)
		}
		if KeySlot(v.Key, 1024) != v.Slot1024 {
			t.Errorf("%q: KeySlot = %d, file says %d", v.Key, KeySlot(v.Key, 1024), v.Slot1024)
		}
	}
}

// decodeCrockford is an independent, bit-at-a-time base32 decoder.
func decodeCrockford(t *testing.T, s string) []byte {
	t.Helper()
	var out []byte
	var acc uint64
	var n int
	for _, c := range s {
		d := strings.IndexRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", c)
		if d < 0 {
			t.Fatalf("%q: %q is not base32", s, c)
		}
		acc = acc<<5 | uint64(d)
		n += 5
		if n >= 8 {
			out = append(out, byte(acc>>(n-8)))
			n -= 8
		}
	}
	return out
}

func TestGoldenIDs(t *testing.T) {
	data := golden(t, "ids.json", genIDVectors(t))
	var v idVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.IDs) == 0 || len(v.Malformed) == 0 || len(v.NotIDs) == 0 {
		t.Fatal("a section of ids.json is empty")
	}
	for _, iv := range v.IDs {
		// Independently of router code: the layout the doc comment promises.
		kind, body, _ := strings.Cut(iv.ID, "_")
		b := decodeCrockford(t, body)
		be := func(p []byte) (x uint64) {
			for _, c := range p {
				x = x<<8 | uint64(c)
			}
			return x
		}
		kh := refXXH64([]byte(iv.Key))
		switch {
		case len(b) != 20 || fmt.Sprintf("%x", b) != iv.BodyHex:
			t.Errorf("%s: body decodes to %x, file says %s", iv.ID, b, iv.BodyHex)
		case kind != iv.Kind:
			t.Errorf("%s: kind %q, file says %q", iv.ID, kind, iv.Kind)
		case int64(be(b[0:6])) != iv.UnixMs:
			t.Errorf("%s: bytes 0-5 = %d, file says unixMs %d", iv.ID, be(b[0:6]), iv.UnixMs)
		case be(b[6:11]) != iv.Entropy:
			t.Errorf("%s: bytes 6-10 = %d, file says entropy %d", iv.ID, be(b[6:11]), iv.Entropy)
		case be(b[11:19]) != kh || iv.KeyHash != hex16(kh):
			t.Errorf("%s: bytes 11-18 = %016x, keyHash %s, xxh64(key) = %016x", iv.ID, be(b[11:19]), iv.KeyHash, kh)
		case b[19] != byte(refXXH64(b[:19])):
			t.Errorf("%s: check byte %02x, want %02x", iv.ID, b[19], byte(refXXH64(b[:19])))
		case iv.Slot1024 != int(kh%1024):
			t.Errorf("%s: slot1024 %d, want %d", iv.ID, iv.Slot1024, kh%1024)
		}

		// And the router agrees with the file.
		info, err := ParseID(iv.ID)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", iv.ID, err)
		}
		if info.Kind != iv.Kind || info.Time.UnixMilli() != iv.UnixMs || hex16(info.KeyHash) != iv.KeyHash || info.Entropy != iv.Entropy {
			t.Errorf("ParseID(%q) = %+v, file says %+v", iv.ID, info, iv)
		}
		if s, err := SlotOf(iv.ID, 1024); err != nil || s != iv.Slot1024 {
			t.Errorf("SlotOf(%q) = %d, %v; want %d", iv.ID, s, err, iv.Slot1024)
		}
		if KeySlot(iv.ID, 1024) != iv.Slot1024 || KeySlot(iv.ID, 1024) != Slot(iv.Key, 1024) {
			t.Errorf("%s does not route with its key %q", iv.ID, iv.Key)
		}
	}
	for _, m := range v.Malformed {
		_, err := ParseID(m.ID)
		wantErr(t, err, ErrMalformedID, m.Reason)
		if _, ok := idHash(m.ID); ok {
			t.Errorf("idHash(%q) accepts a malformed ID", m.ID)
		}
		if KeyHash(m.ID) != refXXH64([]byte(m.ID)) {
			t.Errorf("malformed ID %q does not route by its own hash", m.ID)
		}
	}
	for _, n := range v.NotIDs {
		h := refXXH64([]byte(n.Key))
		if n.XXH64 != hex16(h) || n.Slot1024 != int(h%1024) {
			t.Errorf("%q (%s): file says %s/%d, reference %016x/%d", n.Key, n.Why, n.XXH64, n.Slot1024, h, h%1024)
		}
		if KeySlot(n.Key, 1024) != Slot(n.Key, 1024) || KeyHash(n.Key) != Hash(n.Key) {
			t.Errorf("%q (%s) must route by its own hash", n.Key, n.Why)
		}
		if _, err := ParseID(n.Key); err == nil {
			t.Errorf("ParseID(%q) (%s) succeeded", n.Key, n.Why)
		}
	}
}

func TestGoldenIDsAreSortedByTime(t *testing.T) {
	// Within one kind, string order is (ms, entropy, key hash) order.
	a := mustID(t, "ord", 1000, 1<<63, 5)
	b := mustID(t, "ord", 1000, 0, 6)
	c := mustID(t, "ord", 1001, 0, 0)
	if !(a < b && b < c) {
		t.Fatalf("want %s < %s < %s", a, b, c)
	}
}
