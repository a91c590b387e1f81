package router

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// refXXH64 is an independent, deliberately plain XXH64 (seed 0) written from
// the specification (github.com/Cyan4973/xxHash doc/xxhash_spec.md), used to
// check the library the router depends on and the golden vectors.
func refXXH64(in []byte) uint64 {
	var (
		p1 uint64 = 11400714785074694791
		p2 uint64 = 14029467366897019727
		p3 uint64 = 1609587929392839161
		p4 uint64 = 9650029242287828579
		p5 uint64 = 2870177450012600261
	)
	round := func(acc, lane uint64) uint64 {
		acc += lane * p2
		acc = bits.RotateLeft64(acc, 31)
		return acc * p1
	}
	merge := func(acc, v uint64) uint64 {
		acc ^= round(0, v)
		return acc*p1 + p4
	}
	n := len(in)
	var h uint64
	if n >= 32 {
		v1, v2, v3, v4 := p1+p2, p2, uint64(0), -p1
		for len(in) >= 32 {
			v1 = round(v1, binary.LittleEndian.Uint64(in[0:]))
			v2 = round(v2, binary.LittleEndian.Uint64(in[8:]))
			v3 = round(v3, binary.LittleEndian.Uint64(in[16:]))
			v4 = round(v4, binary.LittleEndian.Uint64(in[24:]))
			in = in[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = merge(h, v1)
		h = merge(h, v2)
		h = merge(h, v3)
		h = merge(h, v4)
	} else {
		h = p5
	}
	h += uint64(n)
	for len(in) >= 8 {
		h ^= round(0, binary.LittleEndian.Uint64(in))
		h = bits.RotateLeft64(h, 27)*p1 + p4
		in = in[8:]
	}
	if len(in) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(in)) * p1
		h = bits.RotateLeft64(h, 23)*p2 + p3
		in = in[4:]
	}
	for _, c := range in {
		h ^= uint64(c) * p5
		h = bits.RotateLeft64(h, 11) * p1
	}
	h ^= h >> 33
	h *= p2
	h ^= h >> 29
	h *= p3
	h ^= h >> 32
	return h
}

// The published XXH64 (seed 0) reference values; every SDK must agree.
func TestHashReferenceValues(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"abc", 0x44bc2cf5ad770999},
	} {
		if got := Hash(c.in); got != c.want {
			t.Errorf("Hash(%q) = %016x, want %016x", c.in, got, c.want)
		}
		if got := refXXH64([]byte(c.in)); got != c.want {
			t.Errorf("refXXH64(%q) = %016x, want %016x (the reference implementation is wrong)", c.in, got, c.want)
		}
	}
}

func TestHashAgreesWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		if got, want := Hash(string(b)), refXXH64(b); got != want {
			t.Fatalf("len %d: Hash = %016x, reference = %016x", n, got, want)
		}
	}
}

func TestCheckSlotCount(t *testing.T) {
	for n := -1; n <= MaxSlotCount*2; n++ {
		ok := n >= 256 && n <= 65536 && n&(n-1) == 0
		err := CheckSlotCount(n)
		if (err == nil) != ok {
			t.Fatalf("CheckSlotCount(%d) = %v, want ok=%v", n, err, ok)
		}
		if err != nil {
			wantErr(t, err, ErrBadSlotCount, fmt.Sprint(n))
		}
	}
}

func TestSlot(t *testing.T) {
	keys := []string{"", "a", "u42", "user-1000000", "用户-42", strings.Repeat("k", 300)}
	for _, k := range keys {
		for n := MinSlotCount; n <= MaxSlotCount; n *= 2 {
			s := Slot(k, n)
			if s < 0 || s >= n {
				t.Fatalf("Slot(%q, %d) = %d out of range", k, n, s)
			}
			if want := int(refXXH64([]byte(k)) % uint64(n)); s != want {
				t.Fatalf("Slot(%q, %d) = %d, want xxh64 mod n = %d", k, n, s, want)
			}
			// Slot counts nest: a slot of a bigger map lies inside one slot of a smaller map.
			if s%MinSlotCount != Slot(k, MinSlotCount) {
				t.Fatalf("Slot(%q, %d) = %d does not nest in Slot(%q, 256) = %d", k, n, s, k, Slot(k, MinSlotCount))
			}
			if KeySlot(k, n) != s || KeyHash(k) != Hash(k) {
				t.Fatalf("KeySlot/KeyHash of the plain key %q differ from Slot/Hash", k)
			}
		}
	}
}

func TestSlotSpreadsKeys(t *testing.T) {
	// Not a statistical test, a guard against a broken mask: 64k user keys
	// must touch every one of 1024 slots, none more than 3x its share.
	const n, keys = 1024, 1 << 16
	var count [n]int
	for i := 0; i < keys; i++ {
		count[Slot(fmt.Sprintf("user-%d", i), n)]++
	}
	for s, c := range count {
		if c == 0 || c > 3*keys/n {
			t.Fatalf("slot %d got %d of %d keys", s, c, keys)
		}
	}
}

func TestCheckKey(t *testing.T) {
	ok := []string{"u42", "a", "user with spaces", "用户", strings.Repeat("x", MaxKeyLen), "ord_lowercase"}
	for _, k := range ok {
		if err := CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q) = %v", k, err)
		}
	}
	bad := []struct{ key, sub string }{
		{"", "empty"},
		{strings.Repeat("x", MaxKeyLen+1), "513 bytes"},
		{"a\nb", "control"},
		{"a\x00", "control"},
		{"a\x7f", "control"},
		{"k\xff", "UTF-8"},
		{"\xc3", "UTF-8"},
	}
	for _, c := range bad {
		wantErr(t, CheckKey(c.key), ErrBadKey, c.sub)
	}
}

func TestSlotRange(t *testing.T) {
	r := SlotRange{3, 7}
	if r.Len() != 5 || r.String() != "3-7" || (SlotRange{4, 4}).String() != "4" {
		t.Fatalf("Len/String: %d %q", r.Len(), r.String())
	}
	for _, c := range []struct {
		r  SlotRange
		ok bool
	}{
		{SlotRange{0, 255}, true}, {SlotRange{255, 255}, true}, {SlotRange{0, 0}, true},
		{SlotRange{-1, 3}, false}, {SlotRange{4, 3}, false}, {SlotRange{0, 256}, false}, {SlotRange{256, 256}, false},
	} {
		err := c.r.Check(256)
		if (err == nil) != c.ok {
			t.Errorf("%v.Check(256) = %v, want ok=%v", c.r, err, c.ok)
		}
		if err != nil {
			wantErr(t, err, ErrBadSlotRange, "outside 0-255")
		}
	}
}

func TestParseSlotRanges(t *testing.T) {
	good := []struct {
		in   string
		want string
	}{
		{"0-63,128,200-255", "0-63,128,200-255"},
		{" 0-1 , 5 ", "0-1,5"},
		{"255", "255"},
		{"7-7", "7"},
		{"10-20,0-9", "10-20,0-9"},
	}
	for _, c := range good {
		rs, err := ParseSlotRanges(c.in, 256)
		if err != nil {
			t.Fatalf("ParseSlotRanges(%q): %v", c.in, err)
		}
		if got := FormatSlotRanges(rs); got != c.want {
			t.Errorf("ParseSlotRanges(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	bad := []struct{ in, sub string }{
		{"", "empty"},
		{"  ", "empty"},
		{"a", "not a number"},
		{"1-b", "not a number"},
		{"-1", "not a number"},
		{"0-256", "outside"},
		{"5-3", "outside"},
		{"0-10,10", "slot 10 listed twice"},
		{"0-10,5-20", "slot 5 listed twice"},
		{"1,,2", "not a number"},
	}
	for _, c := range bad {
		_, err := ParseSlotRanges(c.in, 256)
		wantErr(t, err, ErrBadSlotRange, c.sub)
	}
}

func TestRangesOf(t *testing.T) {
	got := FormatSlotRanges(rangesOf([]int{0, 1, 2, 5, 7, 8, 1023}))
	if got != "0-2,5,7-8,1023" {
		t.Fatalf("rangesOf = %q", got)
	}
	if rangesOf(nil) != nil {
		t.Fatal("rangesOf(nil) != nil")
	}
}
