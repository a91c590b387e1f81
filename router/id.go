package router

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cellkit/cellkit/clock"
)

// A slot-bearing ID is "<kind>_<body>": kind is 1-8 characters [a-z][a-z0-9]*
// (e.g. "ord", "pay", "ref"), body is 32 characters of Crockford base32
// (0-9 A-Z without I L O U, upper case only) encoding 20 bytes, big-endian:
//
//	bytes 0-5    milliseconds since the Unix epoch (48 bits)
//	bytes 6-10   40 bits of entropy, increasing within one generator
//	bytes 11-18  the routing hash of the key the ID was minted for (KeyHash)
//	byte  19     check: low byte of XXH64 (seed 0) of bytes 0-18
//
// Because the body starts with the time and then the entropy, IDs of one kind
// sort by the millisecond they were minted in, and IDs of one kind from one
// generator sort in the order they were minted (whatever their keys: the key
// hash comes after the entropy). Because they carry the full routing hash,
// an ID routes to its key's slot under any slot count, and to a whitelisted
// key's cell, without a lookup. Any request key that is not a well-formed ID
// (including a malformed one) is routed by its own hash. docs/routing.md has the
// rule for SDKs in other languages and testdata/ids.json has vectors.
const (
	idBodyLen    = 32
	idMaxKindLen = 8
	idMinLen     = 1 + 1 + idBodyLen
	idMaxLen     = idMaxKindLen + 1 + idBodyLen
	entropyBits  = 40
	entropyMask  = 1<<entropyBits - 1
	maxIDMillis  = 1<<48 - 1
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var crockfordDec = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(crockford); i++ {
		t[crockford[i]] = byte(i)
	}
	return t
}()

// IDInfo is what a slot-bearing ID carries.
type IDInfo struct {
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	KeyHash uint64    `json:"keyHash"`
	Entropy uint64    `json:"entropy"`
}

// Slot is the slot the ID routes to in a map of slotCount slots.
func (i IDInfo) Slot(slotCount int) int { return int(i.KeyHash & uint64(slotCount-1)) }

// ParseID decodes a slot-bearing ID or says exactly why it is malformed
// (an *IDError, errors.Is ErrMalformedID).
func ParseID(id string) (IDInfo, error) {
	bad := func(format string, args ...any) (IDInfo, error) {
		return IDInfo{}, &IDError{ID: id, Reason: fmt.Sprintf(format, args...)}
	}
	if id == "" {
		return bad("empty")
	}
	sep := -1
	for i := 0; i < len(id) && i <= idMaxKindLen; i++ {
		if id[i] == '_' {
			sep = i
			break
		}
	}
	if sep < 0 {
		return bad("want <kind>_<32 base32 characters> with a kind of 1-%d letters", idMaxKindLen)
	}
	kind, body := id[:sep], id[sep+1:]
	if err := checkKind(kind); err != nil {
		return bad("%v", err)
	}
	if len(body) != idBodyLen {
		return bad("body has %d characters, want %d", len(body), idBodyLen)
	}
	for i := 0; i < len(body); i++ {
		if crockfordDec[body[i]] == 0xff {
			return bad("character %q at position %d is not Crockford base32 (0-9 A-Z without I L O U, upper case)", body[i], sep+1+i)
		}
	}
	var b [20]byte
	decodeBody(&b, body)
	if sum := byte(xxhash.Sum64(b[:19])); sum != b[19] {
		return bad("check byte %02x does not match %02x: mistyped or truncated", b[19], sum)
	}
	return infoOf(kind, &b), nil
}

// SlotOf returns the slot an ID routes to in a map of slotCount slots.
func SlotOf(id string, slotCount int) (int, error) {
	if err := CheckSlotCount(slotCount); err != nil {
		return 0, err
	}
	info, err := ParseID(id)
	if err != nil {
		return 0, err
	}
	return info.Slot(slotCount), nil
}

// idHash is the allocation-free fast path of ParseID used by lookups: the
// routing hash carried by a well-formed ID.
func idHash(s string) (uint64, bool) {
	n := len(s)
	if n < idMinLen || n > idMaxLen {
		return 0, false
	}
	k := n - idBodyLen - 1
	if s[k] != '_' || !kindOK(s[:k]) {
		return 0, false
	}
	var b [20]byte
	if !decodeBody(&b, s[k+1:]) {
		return 0, false
	}
	if byte(xxhash.Sum64(b[:19])) != b[19] {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[11:19]), true
}

func kindOK(k string) bool {
	if len(k) == 0 || len(k) > idMaxKindLen || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func checkKind(kind string) error {
	if !kindOK(kind) {
		return fmt.Errorf("kind %q must be 1-%d characters [a-z][a-z0-9]*", kind, idMaxKindLen)
	}
	return nil
}

// decodeBody turns 32 base32 characters into 20 bytes, 8 characters (40
// bits) at a time, and reports whether every character was valid (in one
// pass: it is on the lookup path).
func decodeBody(b *[20]byte, body string) bool {
	if len(body) != idBodyLen {
		return false
	}
	var bad byte
	for g := 0; g < 4; g++ {
		p := body[g*8 : g*8+8]
		d0, d1, d2, d3 := crockfordDec[p[0]], crockfordDec[p[1]], crockfordDec[p[2]], crockfordDec[p[3]]
		d4, d5, d6, d7 := crockfordDec[p[4]], crockfordDec[p[5]], crockfordDec[p[6]], crockfordDec[p[7]]
		bad |= d0 | d1 | d2 | d3 | d4 | d5 | d6 | d7
		v := uint64(d0)<<35 | uint64(d1)<<30 | uint64(d2)<<25 | uint64(d3)<<20 |
			uint64(d4)<<15 | uint64(d5)<<10 | uint64(d6)<<5 | uint64(d7)
		o := g * 5
		b[o], b[o+1], b[o+2], b[o+3], b[o+4] = byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	return bad < 32 // valid digits are 0-31, invalid ones 0xff
}

func encodeBody(dst []byte, b *[20]byte) {
	for g := 0; g < 4; g++ {
		o := g * 5
		v := uint64(b[o])<<32 | uint64(b[o+1])<<24 | uint64(b[o+2])<<16 | uint64(b[o+3])<<8 | uint64(b[o+4])
		for i := 7; i >= 0; i-- {
			dst[g*8+i] = crockford[v&31]
			v >>= 5
		}
	}
}

func infoOf(kind string, b *[20]byte) IDInfo {
	ms := uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(binary.BigEndian.Uint32(b[2:6]))
	ent := uint64(b[6])<<32 | uint64(binary.BigEndian.Uint32(b[7:11]))
	return IDInfo{
		Kind:    kind,
		Time:    time.UnixMilli(int64(ms)).UTC(),
		KeyHash: binary.BigEndian.Uint64(b[11:19]),
		Entropy: ent,
	}
}

// FormatID assembles an ID from its parts. Most callers want NewID; this is
// for tools and tests that need exact IDs.
func FormatID(kind string, ms int64, keyHash, entropy uint64) (string, error) {
	if err := checkKind(kind); err != nil {
		return "", fmt.Errorf("router: format id: %w: %v", ErrMalformedID, err)
	}
	if ms < 0 || ms > maxIDMillis {
		return "", fmt.Errorf("router: format id: time %d ms outside 48 bits: %w", ms, ErrMalformedID)
	}
	if entropy > entropyMask {
		return "", fmt.Errorf("router: format id: entropy %#x wider than 40 bits: %w", entropy, ErrMalformedID)
	}
	var b [20]byte
	b[0], b[1] = byte(ms>>40), byte(ms>>32)
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	b[6] = byte(entropy >> 32)
	binary.BigEndian.PutUint32(b[7:11], uint32(entropy))
	binary.BigEndian.PutUint64(b[11:19], keyHash)
	b[19] = byte(xxhash.Sum64(b[:19]))
	out := make([]byte, len(kind)+1+idBodyLen)
	copy(out, kind)
	out[len(kind)] = '_'
	encodeBody(out[len(kind)+1:], &b)
	return string(out), nil
}

// IDGenerator mints slot-bearing IDs. IDs from one generator are strictly
// increasing (even if the clock steps back); IDs from different processes are
// unique without coordination because each carries 40 random bits per
// millisecond and key. It is safe for concurrent use.
type IDGenerator struct {
	clock clock.Clock
	rand  io.Reader

	mu      sync.Mutex
	lastMs  int64
	lastEnt uint64
}

// NewIDGenerator returns a generator reading time from c and entropy from r
// (crypto/rand.Reader when nil).
func NewIDGenerator(c clock.Clock, r io.Reader) *IDGenerator {
	if r == nil {
		r = rand.Reader
	}
	return &IDGenerator{clock: c, rand: r}
}

// New mints an ID of the given kind for key: the ID routes wherever key does
// (an ID minted for an ID carries the hash that ID carries).
func (g *IDGenerator) New(kind, key string) (string, error) {
	if err := checkKind(kind); err != nil {
		return "", fmt.Errorf("router: new id: %w", err)
	}
	if err := CheckKey(key); err != nil {
		return "", fmt.Errorf("router: new id: %w", err)
	}
	var rb [8]byte
	if _, err := io.ReadFull(g.rand, rb[3:]); err != nil {
		return "", fmt.Errorf("router: new id: entropy: %w", err)
	}
	// Fresh entropy keeps the top bit clear so increments have room.
	fresh := binary.BigEndian.Uint64(rb[:]) & (entropyMask >> 1)

	g.mu.Lock()
	ms := g.clock.Now().UnixMilli()
	ent := fresh
	if ms <= g.lastMs {
		ms = g.lastMs
		ent = g.lastEnt + 1
		if ent > entropyMask {
			ms, ent = g.lastMs+1, fresh
		}
	}
	g.lastMs, g.lastEnt = ms, ent
	g.mu.Unlock()

	return FormatID(kind, ms, KeyHash(key), ent)
}

var defaultIDs = NewIDGenerator(clock.Real(), nil)

// NewID mints an ID of the given kind for key with the process-wide generator.
func NewID(kind, key string) (string, error) { return defaultIDs.New(kind, key) }
