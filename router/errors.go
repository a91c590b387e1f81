package router

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with errors.Is; messages wrap them with context.
var (
	ErrBadSlotCount      = errors.New("slot count must be a power of two from 256 to 65536")
	ErrBadSlotRange      = errors.New("bad slot range")
	ErrUnknownCell       = errors.New("unknown cell")
	ErrDuplicateCell     = errors.New("duplicate cell")
	ErrBadCell           = errors.New("bad cell")
	ErrBadKey            = errors.New("bad key")
	ErrNotWhitelisted    = errors.New("key is not whitelisted")
	ErrCellInUse         = errors.New("cell still owns slots or whitelisted keys")
	ErrMalformedID       = errors.New("malformed id")
	ErrMalformedMap      = errors.New("malformed map document")
	ErrUnsupportedSchema = errors.New("unsupported map schema version")
	ErrInvalidTable      = errors.New("invalid table")
	ErrEpochRegressed    = errors.New("map epoch went backwards")
)

// ValidationError lists every inconsistency Validate found in a table.
// errors.Is(err, ErrInvalidTable) holds for it.
type ValidationError struct {
	Epoch    uint64
	Problems []string
}

func (e *ValidationError) Error() string {
	const show = 5
	var b strings.Builder
	fmt.Fprintf(&b, "invalid table (epoch %d): %d problem(s): ", e.Epoch, len(e.Problems))
	for i, p := range e.Problems {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalidTable) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidTable }

// IDError says why a string is not a well-formed cellkit ID.
type IDError struct {
	ID     string
	Reason string
}

func (e *IDError) Error() string {
	id := e.ID
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return fmt.Sprintf("malformed id %q: %s", id, e.Reason)
}

// Is makes errors.Is(err, ErrMalformedID) true.
func (e *IDError) Is(target error) bool { return target == ErrMalformedID }
