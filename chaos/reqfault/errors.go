package reqfault

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrBadExperiment: an experiment document is malformed or breaks a
	// rule (see Experiment). Every *ExperimentError wraps it.
	ErrBadExperiment = errors.New("bad experiment")
	// ErrCorrupt: a value stored under the chaos prefix cannot be used.
	// Every *CorruptError wraps it.
	ErrCorrupt = errors.New("stored experiment is corrupt or invalid")
	// ErrNoLease: a stored experiment is not bound to an etcd lease, so
	// nothing would delete it when it expires (it was not written by Put).
	ErrNoLease = errors.New("stored without a lease")
	// ErrBadConfig: an injector Config, or a cluster name, is unusable.
	ErrBadConfig = errors.New("bad reqfault configuration")
)

// ExperimentError says what is wrong with an experiment document.
// errors.Is(err, ErrBadExperiment) holds, and so does errors.Is/As on Err
// (a JSON syntax error, for instance) when it is set.
type ExperimentError struct {
	Name   string // the experiment's name, when known
	Field  string // the JSON field at fault, "" for the document as a whole
	Reason string
	Err    error // underlying cause, may be nil
}

func (e *ExperimentError) Error() string {
	s := "reqfault: experiment"
	if e.Name != "" {
		s += fmt.Sprintf(" %q", e.Name)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ExperimentError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadExperiment}
	}
	return []error{ErrBadExperiment, e.Err}
}

// CorruptError says a value stored under the chaos prefix was not used.
// errors.Is(err, ErrCorrupt) holds, and so does errors.Is/As on Err (an
// *ExperimentError, or ErrNoLease).
type CorruptError struct {
	Key      string
	Revision int64 // mod revision of the bad value
	Err      error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("reqfault: %s at revision %d is corrupt or invalid: %v", e.Key, e.Revision, e.Err)
}

func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }
