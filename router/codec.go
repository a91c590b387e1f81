package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// SchemaVersion is the version of the map document this code reads and writes.
const SchemaVersion = 1

// MaxDocumentSize bounds a map document (etcd's default request limit is 1.5 MiB).
const MaxDocumentSize = 4 << 20

// document is the JSON form of a Table: slot owners and freezes as ranges,
// so a 65536-slot map stays small.
type document struct {
	Schema     int              `json:"schema"`
	Epoch      uint64           `json:"epoch"`
	SlotCount  int              `json:"slotCount"`
	Cells      []Cell           `json:"cells"`
	Slots      []OwnerRange     `json:"slots"`
	Frozen     []FrozenRange    `json:"frozen,omitempty"`
	FrozenKeys []FrozenKey      `json:"frozenKeys,omitempty"`
	Whitelist  []WhitelistEntry `json:"whitelist,omitempty"`
}

// MarshalJSON encodes the table deterministically: cells sorted by ID,
// ranges ascending, keys sorted.
func (t *Table) MarshalJSON() ([]byte, error) {
	d := document{
		Schema:     SchemaVersion,
		Epoch:      t.epoch,
		SlotCount:  t.slotCount,
		Cells:      t.Cells(),
		Slots:      t.OwnerRanges(),
		Frozen:     t.FrozenRanges(),
		FrozenKeys: t.FrozenKeys(),
		Whitelist:  t.Whitelist(),
	}
	d.Slots = slices.DeleteFunc(d.Slots, func(r OwnerRange) bool { return r.Cell == "" })
	return json.Marshal(d)
}

// Encode is MarshalJSON with an error that names the table.
func Encode(t *Table) ([]byte, error) {
	b, err := t.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("router: encode table epoch %d: %w", t.epoch, err)
	}
	return b, nil
}

// Decode parses and validates a map document and returns a sealed table.
// Unknown fields, unknown schema versions, trailing data, overlapping or
// out-of-range ranges and references to unknown cells are errors wrapping
// ErrMalformedMap or ErrUnsupportedSchema; a well-formed but inconsistent map
// returns a *ValidationError.
func Decode(data []byte) (*Table, error) {
	t, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t.Seal(), nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("router: map document: %s: %w", fmt.Sprintf(format, args...), ErrMalformedMap)
}

func decode(data []byte) (*Table, error) {
	if len(data) > MaxDocumentSize {
		return nil, malformed("%d bytes, more than %d", len(data), MaxDocumentSize)
	}
	var probe struct {
		Schema *json.RawMessage `json:"schema"`
	}
	// Only the first value: trailing data is reported as such below.
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&probe); err != nil {
		return nil, malformed("not a JSON object: %v", jsonErr(err))
	}
	if probe.Schema == nil {
		return nil, malformed("no \"schema\" field")
	}
	var schema int
	if err := json.Unmarshal(*probe.Schema, &schema); err != nil {
		return nil, malformed("\"schema\" is not an integer")
	}
	if schema != SchemaVersion {
		return nil, fmt.Errorf("router: map document: schema %d, this build reads schema %d: %w", schema, SchemaVersion, ErrUnsupportedSchema)
	}

	var d document
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, malformed("%v", jsonErr(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, malformed("trailing data after the document")
	}

	t, err := NewTable(d.SlotCount)
	if err != nil {
		return nil, malformed("slotCount %d is not a power of two from %d to %d", d.SlotCount, MinSlotCount, MaxSlotCount)
	}
	t.epoch = d.Epoch
	for _, c := range d.Cells {
		if c.State == "" {
			return nil, malformed("cell %q has no state", c.ID)
		}
		if err := t.AddCell(c); err != nil {
			return nil, malformed("%s", strings.TrimPrefix(err.Error(), "router: "))
		}
	}
	owned := make([]bool, d.SlotCount)
	for _, r := range d.Slots {
		if err := r.Check(d.SlotCount); err != nil {
			return nil, malformed("slots %d-%d: outside 0-%d", r.First, r.Last, d.SlotCount-1)
		}
		for s := r.First; s <= r.Last; s++ {
			if owned[s] {
				return nil, malformed("slot %d assigned twice", s)
			}
			owned[s] = true
		}
		if err := t.Assign(r.SlotRange, r.Cell); err != nil {
			return nil, malformed("slots %s: %s", r.SlotRange, strings.TrimPrefix(err.Error(), "router: "))
		}
	}
	frozen := make([]bool, d.SlotCount)
	for _, r := range d.Frozen {
		if err := r.Check(d.SlotCount); err != nil {
			return nil, malformed("frozen %d-%d: outside 0-%d", r.First, r.Last, d.SlotCount-1)
		}
		for s := r.First; s <= r.Last; s++ {
			if frozen[s] {
				return nil, malformed("slot %d frozen twice", s)
			}
			frozen[s] = true
		}
		if err := t.Freeze(r.SlotRange, r.Cutover); err != nil {
			return nil, malformed("frozen %s: %s", r.SlotRange, strings.TrimPrefix(err.Error(), "router: "))
		}
	}
	for _, k := range d.FrozenKeys {
		if _, dup := t.frozen[Hash(k.Key)]; dup {
			return nil, malformed("frozen key %q listed twice", k.Key)
		}
		if err := t.FreezeKey(k.Key, k.Cutover); err != nil {
			return nil, malformed("frozen key: %s", strings.TrimPrefix(err.Error(), "router: "))
		}
	}
	for _, w := range d.Whitelist {
		if _, dup := t.whitelist[Hash(w.Key)]; dup {
			return nil, malformed("whitelisted key %q listed twice", w.Key)
		}
		if err := t.SetWhitelist(w.Key, w.Cell); err != nil {
			return nil, malformed("whitelist: %s", strings.TrimPrefix(err.Error(), "router: "))
		}
	}
	return t, nil
}

// jsonErr makes encoding/json errors say where the problem is.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: %s is not a valid %s", te.Field, te.Value, te.Type)
	}
	return err.Error()
}
