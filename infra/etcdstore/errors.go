package etcdstore

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	ErrNoMap        = errors.New("no map in etcd")
	ErrMapExists    = errors.New("a map already exists")
	ErrConflict     = errors.New("map changed concurrently too many times")
	ErrNoChange     = errors.New("nothing changed")
	ErrNoReason     = errors.New("a reason is required for every change")
	ErrAuditExists  = errors.New("audit record for this epoch already exists: the map's epoch was rewritten outside cellkit")
	ErrMapDeleted   = errors.New("map key deleted")
	ErrBadConfig    = errors.New("bad store configuration")
	ErrUnreachable  = errors.New("etcd unreachable")
	ErrAuth         = errors.New("etcd refused the credentials")
	ErrTooLarge     = errors.New("change too large for one etcd request")
	ErrCorruptMap   = errors.New("map in etcd is corrupt or invalid")
	ErrAuditCorrupt = errors.New("audit record is corrupt")
	ErrGuardFailed  = errors.New("a condition of the update no longer holds")
)

// CorruptMapError says the stored map could not be used.
// errors.Is(err, ErrCorruptMap) holds, and so does errors.Is on the decode error.
type CorruptMapError struct {
	Key      string
	Revision int64 // mod revision of the bad value
	Err      error // from router.Decode
}

func (e *CorruptMapError) Error() string {
	return fmt.Sprintf("etcdstore: map %s at revision %d is corrupt or invalid: %v", e.Key, e.Revision, e.Err)
}

func (e *CorruptMapError) Unwrap() []error { return []error{ErrCorruptMap, e.Err} }

// UnreachableError names the endpoints that could not be reached.
type UnreachableError struct {
	Endpoints []string
	Err       error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("etcd unreachable at %s: %v", strings.Join(e.Endpoints, ","), e.Err)
}

func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// AuthError says etcd answered but refused the login or the permission.
// errors.Is(err, ErrAuth) holds, and so does errors.Is on etcd's own error.
type AuthError struct {
	Endpoints []string
	Err       error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("etcd at %s refused the credentials: %v", strings.Join(e.Endpoints, ","), e.Err)
}

func (e *AuthError) Unwrap() []error { return []error{ErrAuth, e.Err} }
