package cell

import (
	"errors"
	"fmt"
	"time"
)

// Code is the closed set of refusals a guard gives. cell/wire maps each to a
// gRPC status and an HTTP status in one place.
type Code string

// Codes. The zero Code means admitted.
const (
	CodeWrongCell Code = "WRONG_CELL" // another cell owns the key
	CodeFrozen    Code = "FROZEN"     // the key is being moved; retry after a pause
	CodeFenced    Code = "FENCED"     // this instance or cell is fenced
	CodeStaleMap  Code = "STALE_MAP"  // the request saw a newer map than the guard can reach
	CodeNoKey     Code = "NO_KEY"     // a guarded method got no routing key
)

// Sentinels, matched with errors.Is.
var (
	ErrWrongCell = errors.New("wrong cell")
	ErrFrozen    = errors.New("key frozen")
	ErrFenced    = errors.New("fenced")
	ErrStaleMap  = errors.New("guard map older than the request's")
	ErrNoKey     = errors.New("no routing key")
	ErrBadConfig = errors.New("bad guard configuration")
)

// WrongCellError says which cell owns the key, at which epoch.
type WrongCellError struct {
	Key      string
	Cell     string // the cell that refused
	Owner    string // the owner by the refusing guard's map
	OwnerIDC string
	Epoch    uint64
}

func (e *WrongCellError) Error() string {
	return fmt.Sprintf("WRONG_CELL: key %q belongs to cell %s (idc %s) at epoch %d, not %s", e.Key, e.Owner, e.OwnerIDC, e.Epoch, e.Cell)
}

// Is makes errors.Is(err, ErrWrongCell) true.
func (e *WrongCellError) Is(t error) bool { return t == ErrWrongCell }

// FrozenError says the key is being moved by a cutover.
type FrozenError struct {
	Key        string
	Slot       int
	Cutover    string
	RetryAfter time.Duration
	Epoch      uint64
}

func (e *FrozenError) Error() string {
	return fmt.Sprintf("FROZEN: key %q (slot %d) is being moved by cutover %s at epoch %d; retry after %v", e.Key, e.Slot, e.Cutover, e.Epoch, e.RetryAfter)
}

// Is makes errors.Is(err, ErrFrozen) true.
func (e *FrozenError) Is(t error) bool { return t == ErrFrozen }

// FencedError says the instance admits nothing.
type FencedError struct {
	Cell     string
	Instance string
	Reason   string // "lease not renewed in time", "cell marked fenced in the map", ...
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("FENCED: cell %s instance %s admits nothing: %s", e.Cell, e.Instance, e.Reason)
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Is(t error) bool { return t == ErrFenced }

// StaleMapError says the request carried a newer epoch than the guard
// reached within its wait.
type StaleMapError struct {
	Have, Want uint64
	RetryAfter time.Duration
}

func (e *StaleMapError) Error() string {
	return fmt.Sprintf("STALE_MAP: request saw map epoch %d, guard has %d; retry after %v", e.Want, e.Have, e.RetryAfter)
}

// Is makes errors.Is(err, ErrStaleMap) true.
func (e *StaleMapError) Is(t error) bool { return t == ErrStaleMap }

// CodeOf returns the refusal code of err ("" for nil or an error that is not
// a guard refusal).
func CodeOf(err error) Code {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrWrongCell):
		return CodeWrongCell
	case errors.Is(err, ErrFrozen):
		return CodeFrozen
	case errors.Is(err, ErrFenced):
		return CodeFenced
	case errors.Is(err, ErrStaleMap):
		return CodeStaleMap
	case errors.Is(err, ErrNoKey):
		return CodeNoKey
	}
	return ""
}
