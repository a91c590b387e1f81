package router

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// Slot-count bounds. The slot count is fixed when a map is created.
const (
	MinSlotCount     = 256
	MaxSlotCount     = 65536
	DefaultSlotCount = 1024
)

// MaxKeyLen is the longest routing key accepted in a whitelist or freeze.
const MaxKeyLen = 512

// CheckSlotCount reports whether n is a usable slot count.
func CheckSlotCount(n int) error {
	if n < MinSlotCount || n > MaxSlotCount || bits.OnesCount(uint(n)) != 1 {
		return fmt.Errorf("router: slot count %d: %w", n, ErrBadSlotCount)
	}
	return nil
}

// Hash is the routing hash of a key: XXH64 of its bytes with seed 0.
func Hash(key string) uint64 { return xxhash.Sum64String(key) }

// Slot returns xxh64(key, seed 0) mod slotCount. slotCount must be a valid
// slot count (see CheckSlotCount). Slot does not look inside slot-bearing IDs;
// KeySlot does.
func Slot(key string, slotCount int) int {
	return int(xxhash.Sum64String(key) & uint64(slotCount-1))
}

// KeyHash returns the routing hash of a request key: for a well-formed
// slot-bearing ID (see NewID) the hash of the key it was minted for, for any
// other string Hash(key). It does not allocate.
func KeyHash(key string) uint64 {
	if h, ok := idHash(key); ok {
		return h
	}
	return xxhash.Sum64String(key)
}

// KeySlot returns the slot a request key routes to: KeyHash(key) mod slotCount.
func KeySlot(key string, slotCount int) int {
	return int(KeyHash(key) & uint64(slotCount-1))
}

// CheckKey reports whether key can be whitelisted or frozen.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("router: empty key: %w", ErrBadKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("router: key of %d bytes (max %d): %w", len(key), MaxKeyLen, ErrBadKey)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("router: key %q has a control character: %w", key, ErrBadKey)
		}
	}
	// The map document is JSON, which would turn invalid UTF-8 into U+FFFD:
	// the stored key would no longer be the key that was pinned.
	if !utf8.ValidString(key) {
		return fmt.Errorf("router: key %q is not valid UTF-8: %w", key, ErrBadKey)
	}
	return nil
}

// SlotRange is an inclusive range of slots.
type SlotRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// Len is the number of slots in the range.
func (r SlotRange) Len() int { return r.Last - r.First + 1 }

func (r SlotRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(r.First)
	}
	return strconv.Itoa(r.First) + "-" + strconv.Itoa(r.Last)
}

// Check reports whether r is a non-empty range within a map of slotCount slots.
func (r SlotRange) Check(slotCount int) error {
	if r.First < 0 || r.Last < r.First || r.Last >= slotCount {
		return fmt.Errorf("router: slot range %d-%d outside 0-%d: %w", r.First, r.Last, slotCount-1, ErrBadSlotRange)
	}
	return nil
}

// ParseSlotRanges parses "0-63,128,200-255" into ranges, each checked against
// slotCount. Overlapping or empty input is an error.
func ParseSlotRanges(s string, slotCount int) ([]SlotRange, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("router: empty slot list: %w", ErrBadSlotRange)
	}
	var out []SlotRange
	seen := make(map[int]bool)
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("router: slot range %q: not a number: %w", part, ErrBadSlotRange)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("router: slot range %q: not a number: %w", part, ErrBadSlotRange)
			}
		}
		r := SlotRange{first, last}
		if err := r.Check(slotCount); err != nil {
			return nil, err
		}
		for i := r.First; i <= r.Last; i++ {
			if seen[i] {
				return nil, fmt.Errorf("router: slot %d listed twice in %q: %w", i, s, ErrBadSlotRange)
			}
			seen[i] = true
		}
		out = append(out, r)
	}
	return out, nil
}

// FormatSlotRanges renders ranges as "0-63,128".
func FormatSlotRanges(rs []SlotRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// rangesOf compresses a sorted list of slots into ranges.
func rangesOf(slots []int) []SlotRange {
	var out []SlotRange
	for _, s := range slots {
		if n := len(out); n > 0 && out[n-1].Last+1 == s {
			out[n-1].Last = s
			continue
		}
		out = append(out, SlotRange{s, s})
	}
	return out
}
