package drill

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadScenario is wrapped by every *ScenarioError: match it with
// errors.Is, read the details with errors.As.
var ErrBadScenario = errors.New("bad scenario")

// ErrBadDuration is wrapped by every error of Duration.UnmarshalJSON.
var ErrBadDuration = errors.New("bad duration")

// ScenarioError is why a scenario file was refused.
//
// Its text is "FILE: step N (KIND): MSG", where N counts steps from 1 as a
// reader of the file does (Step is the 0-based index), or "FILE: MSG" for
// anything outside the steps.
type ScenarioError struct {
	// File is the name given to Parse (the path given to Load); "" from
	// Validate.
	File string
	// Step is the 0-based index of the step at fault; -1 when the error is
	// not in a step.
	Step int
	// Kind is the kind of that step ("inject"), when it has exactly one.
	Kind string
	// Field is the JSON path of the field at fault, relative to the
	// scenario ("lab.slotCount") or, in a step, to the step
	// ("inject.latency", "wait.until"); "" when no single field is.
	Field string
	// Msg says what is wrong, for a person.
	Msg string
}

func (e *ScenarioError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Step >= 0 {
		fmt.Fprintf(&b, "step %d", e.Step+1)
		if e.Kind != "" {
			fmt.Fprintf(&b, " (%s)", e.Kind)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrBadScenario.
func (e *ScenarioError) Unwrap() error { return ErrBadScenario }

// durationError is an error of Duration.UnmarshalJSON.
type durationError struct{ msg string }

func (e *durationError) Error() string { return e.msg }
func (e *durationError) Unwrap() error { return ErrBadDuration }
