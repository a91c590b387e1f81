package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellkit/cellkit/clock/clocktest"
)

var t0 = time.UnixMilli(1_700_000_000_000).UTC()

// seqReader yields deterministic "random" bytes.
type seqReader struct{ r *rand.Rand }

func (s seqReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(s.r.UintN(256))
	}
	return len(p), nil
}

func newSeqReader(seed uint64) io.Reader { return seqReader{rand.New(rand.NewPCG(seed, seed))} }

func TestNewIDParseIDRoundTrip(t *testing.T) {
	id, err := NewID("ord", "user-42")
	if err != nil {
		t.Fatal(err)
	}
	info, err := ParseID(id)
	if err != nil {
		t.Fatalf("ParseID(%q): %v", id, err)
	}
	if info.Kind != "ord" || info.KeyHash != Hash("user-42") || info.Entropy > entropyMask {
		t.Fatalf("ParseID(%q) = %+v", id, info)
	}
	if !strings.HasPrefix(id, "ord_") || len(id) != 4+idBodyLen {
		t.Fatalf("id %q has the wrong shape", id)
	}

	// With a fake clock the time is exact.
	c := clocktest.New(t0.Add(123 * time.Millisecond))
	g := NewIDGenerator(c, newSeqReader(1))
	for _, key := range []string{"u42", "用户", "with space", strings.Repeat("k", MaxKeyLen)} {
		for _, kind := range []string{"o", "ord", "pay2", "abcdefgh"} {
			id, err := g.New(kind, key)
			if err != nil {
				t.Fatal(err)
			}
			info, err := ParseID(id)
			if err != nil {
				t.Fatalf("ParseID(%q): %v", id, err)
			}
			if info.Kind != kind || !info.Time.Equal(c.Now()) || info.KeyHash != Hash(key) {
				t.Fatalf("ParseID(%q) = %+v; want kind %s time %v hash %x", id, info, kind, c.Now(), Hash(key))
			}
			again, err := FormatID(info.Kind, info.Time.UnixMilli(), info.KeyHash, info.Entropy)
			if err != nil || again != id {
				t.Fatalf("FormatID(ParseID(%q)) = %q, %v", id, again, err)
			}
			if h, ok := idHash(id); !ok || h != Hash(key) || KeyHash(id) != Hash(key) {
				t.Fatalf("idHash(%q) = %x, %v", id, h, ok)
			}
			if strings.ContainsAny(id[len(kind)+1:], "ILOUilou") {
				t.Fatalf("%q uses a letter Crockford base32 excludes", id)
			}
		}
	}
}

func TestSlotOfMatchesKeySlot(t *testing.T) {
	g := NewIDGenerator(clocktest.New(t0), newSeqReader(2))
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("user-%d", i*7919)
		id, err := g.New("pay", key)
		if err != nil {
			t.Fatal(err)
		}
		for n := MinSlotCount; n <= MaxSlotCount; n *= 2 {
			s, err := SlotOf(id, n)
			if err != nil {
				t.Fatal(err)
			}
			if want := Slot(key, n); s != want || KeySlot(id, n) != want {
				t.Fatalf("SlotOf(%q, %d) = %d, KeySlot = %d; key %q is in slot %d", id, n, s, KeySlot(id, n), key, want)
			}
		}
	}
	id, _ := g.New("pay", "u1")
	for _, n := range []int{0, 100, 255, 1000, 131072} {
		_, err := SlotOf(id, n)
		wantErr(t, err, ErrBadSlotCount)
	}
	_, err := SlotOf("pay_nope", 1024)
	wantErr(t, err, ErrMalformedID)
}

func TestIDMintedForAnIDRoutesWithIt(t *testing.T) {
	g := NewIDGenerator(clocktest.New(t0), newSeqReader(3))
	ord, err := g.New("ord", "user-7")
	must(t, err)
	pay, err := g.New("pay", ord)
	must(t, err)
	if KeyHash(pay) != Hash("user-7") || KeySlot(pay, 1024) != Slot("user-7", 1024) {
		t.Fatalf("a payment ID minted for order %s does not route with user-7", ord)
	}
}

// One generator's IDs sort in the order they were minted, whatever the keys
// and whatever the clock does.
func TestIDGeneratorMonotonic(t *testing.T) {
	c := clocktest.New(t0)
	g := NewIDGenerator(c, newSeqReader(4))
	var ids []string
	mint := func(n int) {
		for i := 0; i < n; i++ {
			id, err := g.New("ord", fmt.Sprintf("user-%d", len(ids)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	mint(500) // clock stands still
	c.Advance(time.Millisecond)
	mint(10)
	c.Advance(-5 * time.Second) // clock steps back
	mint(500)
	c.Advance(time.Hour)
	mint(10)
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %d %s <= id %d %s", i, ids[i], i-1, ids[i-1])
		}
	}
	if !slices.IsSorted(ids) {
		t.Fatal("not sorted")
	}
	// After the step back the generator keeps the last millisecond it used.
	info, _ := ParseID(ids[1000])
	if want := t0.Add(time.Millisecond); !info.Time.Equal(want) {
		t.Fatalf("after a step back: time %v, want %v", info.Time, want)
	}
}

func TestIDGeneratorEntropyOverflow(t *testing.T) {
	c := clocktest.New(t0)
	// All-ones randomness: fresh entropy is the largest allowed start (top bit clear).
	g := NewIDGenerator(c, bytes.NewReader(bytes.Repeat([]byte{0xff}, 1<<10)))
	ms := t0.UnixMilli()
	g.lastMs, g.lastEnt = ms, entropyMask-2 // as if 2^40-3 IDs were minted this millisecond
	var ids []string
	var infos []IDInfo
	for i := 0; i < 5; i++ {
		id, err := g.New("ord", fmt.Sprintf("k%d", i))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := ParseID(id)
		ids, infos = append(ids, id), append(infos, info)
	}
	want := []struct {
		ms  int64
		ent uint64
	}{
		{ms, entropyMask - 1},
		{ms, entropyMask},
		{ms + 1, entropyMask >> 1}, // overflow borrows the next millisecond, fresh entropy
		{ms + 1, entropyMask>>1 + 1},
		{ms + 1, entropyMask>>1 + 2},
	}
	for i, w := range want {
		if infos[i].Time.UnixMilli() != w.ms || infos[i].Entropy != w.ent {
			t.Errorf("id %d: ms %d entropy %#x, want %d %#x", i, infos[i].Time.UnixMilli(), infos[i].Entropy, w.ms, w.ent)
		}
		if i > 0 && ids[i] <= ids[i-1] {
			t.Errorf("id %d %s <= %s", i, ids[i], ids[i-1])
		}
	}
	// When the real clock catches up with the borrowed millisecond it continues from there.
	c.Advance(time.Millisecond)
	id, _ := g.New("ord", "k")
	if id <= ids[4] {
		t.Fatalf("%s <= %s", id, ids[4])
	}
}

func TestIDGeneratorsDistinct(t *testing.T) {
	c := clocktest.New(t0) // one instant for everybody
	seen := map[string]bool{}
	for gi := 0; gi < 8; gi++ {
		g := NewIDGenerator(c, nil) // crypto/rand
		for i := 0; i < 200; i++ {
			id, err := g.New("ord", "same-key")
			if err != nil {
				t.Fatal(err)
			}
			if seen[id] {
				t.Fatalf("generator %d minted duplicate %s", gi, id)
			}
			seen[id] = true
		}
	}
}

func TestIDGeneratorConcurrent(t *testing.T) {
	c := clocktest.New(t0)
	g := NewIDGenerator(c, nil)
	const workers, per = 8, 200
	out := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				id, err := g.New("ord", fmt.Sprintf("w%d-%d", w, i))
				if err != nil {
					t.Error(err)
					return
				}
				out[w] = append(out[w], id)
			}
		}()
	}
	wg.Wait()
	all := map[string]bool{}
	for _, ids := range out {
		if !slices.IsSorted(ids) {
			t.Fatal("one goroutine's IDs are not increasing")
		}
		for _, id := range ids {
			if all[id] {
				t.Fatalf("duplicate %s", id)
			}
			all[id] = true
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestIDGeneratorErrors(t *testing.T) {
	g := NewIDGenerator(clocktest.New(t0), newSeqReader(5))
	for _, c := range []struct {
		kind, key string
		target    error
		sub       string
	}{
		{"", "u1", nil, "kind"},
		{"ORD", "u1", nil, "kind"},
		{"toolongkind", "u1", nil, "kind"},
		{"ord", "", ErrBadKey, "empty key"},
		{"ord", "a\nb", ErrBadKey, "control"},
	} {
		_, err := g.New(c.kind, c.key)
		wantErr(t, err, c.target, c.sub)
	}
	_, err := NewIDGenerator(clocktest.New(t0), errReader{}).New("ord", "u1")
	wantErr(t, err, io.ErrUnexpectedEOF, "entropy")

	// A clock past the 48-bit range (year 10889) cannot mint.
	_, err = NewIDGenerator(clocktest.New(time.UnixMilli(maxIDMillis+1)), newSeqReader(6)).New("ord", "u1")
	wantErr(t, err, ErrMalformedID, "outside 48 bits")
}

func TestFormatID(t *testing.T) {
	// Boundaries that work.
	for _, c := range []struct {
		kind string
		ms   int64
		ent  uint64
	}{
		{"a", 0, 0}, {"abcdefgh", maxIDMillis, entropyMask}, {"z9", 1, 1},
	} {
		id, err := FormatID(c.kind, c.ms, ^uint64(0), c.ent)
		if err != nil {
			t.Fatalf("FormatID(%q, %d, _, %d): %v", c.kind, c.ms, c.ent, err)
		}
		info, err := ParseID(id)
		if err != nil || info.Time.UnixMilli() != c.ms || info.Entropy != c.ent || info.KeyHash != ^uint64(0) {
			t.Fatalf("ParseID(%q) = %+v, %v", id, info, err)
		}
	}
	for _, c := range []struct {
		kind string
		ms   int64
		ent  uint64
		sub  string
	}{
		{"", 0, 0, "kind"},
		{"abcdefghi", 0, 0, "kind"},
		{"a_b", 0, 0, "kind"},
		{"ord", -1, 0, "outside 48 bits"},
		{"ord", maxIDMillis + 1, 0, "outside 48 bits"},
		{"ord", 0, entropyMask + 1, "wider than 40 bits"},
	} {
		_, err := FormatID(c.kind, c.ms, 0, c.ent)
		wantErr(t, err, ErrMalformedID, c.sub)
	}
}

// String order of IDs of one kind is numeric order of (ms, entropy, hash).
func TestIDOrderProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	type parts struct {
		ms       int64
		ent, key uint64
	}
	less := func(a, b parts) bool {
		if a.ms != b.ms {
			return a.ms < b.ms
		}
		if a.ent != b.ent {
			return a.ent < b.ent
		}
		return a.key < b.key
	}
	for i := 0; i < 5000; i++ {
		a := parts{r.Int64N(maxIDMillis + 1), r.Uint64() & entropyMask, r.Uint64()}
		b := a
		switch r.IntN(3) { // mostly near-ties, which are the interesting case
		case 0:
			b.ms = r.Int64N(maxIDMillis + 1)
		case 1:
			b.ent = r.Uint64() & entropyMask
		case 2:
			b.key = r.Uint64()
		}
		ia, ib := mustID(t, "ord", a.ms, a.key, a.ent), mustID(t, "ord", b.ms, b.key, b.ent)
		if (ia < ib) != less(a, b) {
			t.Fatalf("%+v -> %s, %+v -> %s: string order disagrees", a, ia, b, ib)
		}
	}
}

func TestParseIDErrors(t *testing.T) {
	good := mustID(t, "ord", t0.UnixMilli(), Hash("u42"), 99)
	body := good[4:]
	for _, c := range []struct{ id, sub string }{
		{"", "empty"},
		{"ord", "want <kind>_"},
		{"ord-" + body, "want <kind>_"},
		{"verylongk_" + body, "want <kind>_"},
		{"_" + body, `kind ""`},
		{"Ord_" + body, `kind "Ord"`},
		{"ord_" + body[1:], "body has 31 characters"},
		{"ord_" + body + "A", "body has 33 characters"},
		{"ord_" + strings.ToLower(body), "not Crockford base32"},
		{"ord_" + "I" + body[1:], "'I' at position 4"},
		{"ord_" + body[:31] + "\x00", "position 35"},
		{spoil(good), "check byte"},
		{good[:len(good)-1] + "_", "not Crockford"},
	} {
		_, err := ParseID(c.id)
		wantErr(t, err, ErrMalformedID, c.sub)
		var ie *IDError
		if !errors.As(err, &ie) || ie.ID != c.id || ie.Reason == "" {
			t.Fatalf("ParseID(%q): %v is not a filled *IDError", c.id, err)
		}
		if _, ok := idHash(c.id); ok {
			t.Fatalf("idHash(%q) accepts what ParseID refuses", c.id)
		}
	}
	// Long input is cut in the message.
	long := strings.Repeat("x", 1000)
	_, err := ParseID(long)
	if len(err.Error()) > 200 || !strings.Contains(err.Error(), "...") {
		t.Fatalf("message for a 1000-byte id: %q", err)
	}
}

func TestKeyHashDoesNotAllocate(t *testing.T) {
	id := mustID(t, "ord", t0.UnixMilli(), Hash("u42"), 1)
	keys := []string{"user-12345", id, spoil(id), strings.ToLower(id)}
	for _, k := range keys {
		if n := testing.AllocsPerRun(100, func() { _ = KeySlot(k, 1024) }); n != 0 {
			t.Errorf("KeySlot(%q) allocates %v times", k, n)
		}
	}
}
