package failover

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cellkit/cellkit/router"
)

// Step is where a cutover is within its current stage.
type StepName string

// Steps of a stage, in order, then the steps outside the forward path.
const (
	StepFreeze   StepName = "freeze"    // CAS the map: the stage's slots frozen, owner unchanged
	StepBarrier  StepName = "barrier"   // wait for every live guard to ack the freeze epoch
	StepData     StepName = "data-gate" // wait for the data mover: the target has every write
	StepFlip     StepName = "flip"      // CAS the map: owner := target, unfrozen
	StepVerify   StepName = "verify"    // bake under the SLO gates
	StepUnfreeze StepName = "unfreeze"  // undo a freeze after a failed barrier or gate, or an abort
	StepHold     StepName = "hold"      // between stages: waiting for an operator
	StepEnd      StepName = "end"       // finished; nothing more will happen
)

// Status is the state of a whole cutover.
type Status string

// Statuses. Done, aborted and rolled-back are terminal; waiting, paused and
// failed hold the cutover (no slot frozen) until an operator resumes,
// rolls back or aborts it.
const (
	StatusRunning    Status = "running"
	StatusWaiting    Status = "waiting" // a stage is done; without --auto the next waits for resume
	StatusPaused     Status = "paused"
	StatusFailed     Status = "failed" // a barrier or gate failed; the stage was unfrozen; resume retries it
	StatusDone       Status = "done"
	StatusAborted    Status = "aborted"
	StatusRolledBack Status = "rolled-back"
)

// Terminal reports whether nothing more can happen to a cutover in s.
func (s Status) Terminal() bool {
	return s == StatusDone || s == StatusAborted || s == StatusRolledBack
}

// Options tune a cutover. Zero durations mean the defaults.
type Options struct {
	// Auto proceeds to the next stage when a stage's gates pass; without it
	// the cutover waits (status waiting) for `cellctl cutover resume`.
	Auto bool `json:"auto,omitempty"`
	// BarrierTimeout bounds the wait for acks of a freeze. Default 30s.
	BarrierTimeout time.Duration `json:"barrierTimeout,omitempty"`
	// DataTimeout bounds the data gate. Default 60s.
	DataTimeout time.Duration `json:"dataTimeout,omitempty"`
	// Bake is how long each stage soaks under the SLO gates after its flip.
	// Default 10s; negative: no soak (gates checked once).
	Bake time.Duration `json:"bake,omitempty"`
	// Emergency marks an emergency failover: the freeze also marks the
	// source cells fenced, and the barrier waits for their leases to expire.
	Emergency bool `json:"emergency,omitempty"`
	// Drain marks the source cell offline with the last flip.
	Drain bool `json:"drain,omitempty"`
}

// WithDefaults fills the zero fields.
func (o Options) WithDefaults() Options {
	if o.BarrierTimeout == 0 {
		o.BarrierTimeout = 30 * time.Second
	}
	if o.DataTimeout == 0 {
		o.DataTimeout = 60 * time.Second
	}
	if o.Bake == 0 {
		o.Bake = 10 * time.Second
	}
	return o
}

// Command is an operator's request to a cutover in progress.
type Command string

// Operator commands.
const (
	CmdNone     Command = ""
	CmdPause    Command = "pause"    // stop at the next stage boundary
	CmdAbort    Command = "abort"    // stop now, unfreezing what is frozen; flipped stages stay
	CmdRollback Command = "rollback" // move everything this cutover moved back
)

// State is the workflow record of one cutover: what is stored in etcd at
// cutovers/<id> and what Step advances. It is plain data.
type State struct {
	ID      string  `json:"id"`
	Who     string  `json:"who"`
	Why     string  `json:"why"`
	Plan    *Plan   `json:"plan"`
	Options Options `json:"options"`

	Status Status   `json:"status"`
	Stage  int      `json:"stage"` // index into Plan.Stages
	Step   StepName `json:"step"`
	// Rollback, when set, is the movement being undone; the steps then
	// apply to it instead of the current stage.
	Rollback *Movement `json:"rollback,omitempty"`
	// Epoch is the map epoch of the last map edit of this cutover: the
	// barrier waits for acks of it.
	Epoch uint64 `json:"epoch,omitempty"`
	// After says what an unfreeze leads to: failed, aborted, or a rollback.
	After Status `json:"after,omitempty"`
	// RollbackThen is what the cutover becomes when the rollback in
	// progress is done: failed (a stage rolled back after its gates failed;
	// resume retries it, rollback undoes the earlier stages) or rolled-back
	// (everything undone).
	RollbackThen Status `json:"rollbackThen,omitempty"`
	// Pending is an operator request not yet acted on.
	Pending Command `json:"pending,omitempty"`
	// Reason says why the cutover is held or ended, in words.
	Reason string `json:"reason,omitempty"`

	Stages  []StageLog `json:"stages"`
	Created time.Time  `json:"created"`
	Updated time.Time  `json:"updated"`
}

// StageLog is what happened to one stage.
type StageLog struct {
	Name        string    `json:"name"`
	Attempts    int       `json:"attempts,omitempty"`
	FreezeEpoch uint64    `json:"freezeEpoch,omitempty"`
	FlipEpoch   uint64    `json:"flipEpoch,omitempty"`
	FrozenAt    time.Time `json:"frozenAt,omitzero"`
	FlippedAt   time.Time `json:"flippedAt,omitzero"`
	VerifiedAt  time.Time `json:"verifiedAt,omitzero"`
	// Window is the write-unavailable window of the moved slots: freeze
	// applied to flip applied.
	Window  time.Duration `json:"window,omitempty"`
	Flipped bool          `json:"flipped,omitempty"`
	// Warning records a gate failure that was not rolled back (an
	// emergency failover's flip stands).
	Warning    string `json:"warning,omitempty"`
	RolledBack bool   `json:"rolledBack,omitempty"`
}

// NewState returns the record of a cutover that has not started.
func NewState(id, who, why string, p *Plan, o Options, now time.Time) *State {
	s := &State{ID: id, Who: who, Why: why, Plan: p, Options: o.WithDefaults(), Created: now, Updated: now}
	for _, st := range p.Stages {
		s.Stages = append(s.Stages, StageLog{Name: st.Name})
	}
	return s
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := *s
	c.Stages = append([]StageLog(nil), s.Stages...)
	if s.Rollback != nil {
		r := *s.Rollback
		c.Rollback = &r
	}
	return &c
}

// Movement is what the current step moves: the rollback movement while
// rolling back, else the current stage's.
func (s *State) Movement() Movement {
	if s.Rollback != nil {
		return *s.Rollback
	}
	if s.Stage >= len(s.Plan.Stages) {
		return Movement{}
	}
	return s.Plan.Stages[s.Stage].Movement()
}

// StageName names the current stage for people ("1/8", "rollback of 1/8").
func (s *State) StageName() string {
	name := ""
	if s.Stage < len(s.Plan.Stages) {
		name = s.Plan.Stages[s.Stage].Name
	}
	if s.Rollback != nil {
		return "rollback (after " + name + ")"
	}
	return name
}

// Frozen reports whether the cutover may have slots frozen in the map now.
func (s *State) Frozen() bool {
	switch s.Step {
	case StepBarrier, StepData, StepFlip, StepUnfreeze:
		return true
	case StepFreeze:
		return s.Status == StatusRunning
	}
	return false
}

// EventKind names an event.
type EventKind string

// Events fed to Step: results of actions, and operator requests.
const (
	EvStart        EventKind = "start"         // the runner begins a new cutover
	EvResume       EventKind = "resume"        // a runner (re)starts on the record, or an operator resumes it
	EvApplied      EventKind = "applied"       // an apply-map action took effect at Epoch
	EvAcked        EventKind = "acked"         // the barrier completed
	EvAcksTimeout  EventKind = "acks-timeout"  // the barrier timed out (Detail: who is missing)
	EvDataReady    EventKind = "data-ready"    // the data gate passed
	EvDataFailed   EventKind = "data-failed"   // the data gate failed or timed out
	EvVerified     EventKind = "verified"      // the bake ended with every gate holding
	EvVerifyFailed EventKind = "verify-failed" // a gate failed during the bake
	EvApplyFailed  EventKind = "apply-failed"  // an apply-map action was refused (the map changed by hand)
	EvPause        EventKind = "pause"
	EvAbort        EventKind = "abort"
	EvRollback     EventKind = "rollback"
)

// Event is one input to Step.
type Event struct {
	Kind   EventKind `json:"kind"`
	At     time.Time `json:"at"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// ActionKind names an action.
type ActionKind string

// Actions Step asks the runner to perform. Each answers with an event.
const (
	ActApplyMap ActionKind = "apply-map" // → applied | apply-failed
	ActWaitAcks ActionKind = "wait-acks" // → acked | acks-timeout
	ActWaitData ActionKind = "wait-data" // → data-ready | data-failed
	ActVerify   ActionKind = "verify"    // → verified | verify-failed
)

// Action is one thing for the runner to do.
type Action struct {
	Kind    ActionKind    `json:"kind"`
	Change  *Change       `json:"change,omitempty"`  // apply-map
	Epoch   uint64        `json:"epoch,omitempty"`   // wait-acks: every live guard at or above it
	Move    *Movement     `json:"move,omitempty"`    // wait-data, verify
	Timeout time.Duration `json:"timeout,omitempty"` // wait-acks, wait-data; verify: the bake
}

// Interruptible reports whether an operator's abort or rollback may cancel
// the action midway (waits may; map edits always finish).
func (a Action) Interruptible() bool { return a.Kind != ActApplyMap }

// ErrBadEvent is wrapped by Step's refusal of an event that cannot happen
// in the current state (a runner bug, or a stale operator request).
var ErrBadEvent = fmt.Errorf("event does not apply")

// Step advances a cutover by one event. It is pure: it returns a new state
// and the actions to perform next (none when the cutover holds or ended),
// never touching s. An event that does not apply returns an error wrapping
// ErrBadEvent and leaves the state as it was.
func Step(s *State, ev Event) (*State, []Action, error) {
	n := s.Clone()
	n.Updated = ev.At
	acts, err := n.step(ev)
	if err != nil {
		return s, nil, fmt.Errorf("failover: cutover %s: %s at %s/%s: %w: %v", s.ID, ev.Kind, s.Status, s.Step, ErrBadEvent, err)
	}
	return n, acts, nil
}

func (s *State) step(ev Event) ([]Action, error) {
	switch ev.Kind {
	case EvStart:
		if s.Status != "" {
			return nil, fmt.Errorf("already started")
		}
		s.Status = StatusRunning
		return s.enterStage(0, ev)
	case EvResume:
		return s.resume(ev)
	case EvPause, EvAbort, EvRollback:
		acts, err := s.request(ev)
		if err == nil && acts == nil {
			// Still on the same step (a pause, or a request waiting for a
			// map edit): its action again, as on resume, so that a runner
			// started with the request carries the step on.
			acts = s.action()
		}
		return acts, err
	}
	if s.Status != StatusRunning {
		return nil, fmt.Errorf("the cutover is %s", s.Status)
	}
	switch s.Step {
	case StepFreeze:
		switch ev.Kind {
		case EvApplied:
			s.Epoch = ev.Epoch
			if s.Rollback == nil {
				l := &s.Stages[s.Stage]
				l.FreezeEpoch, l.FrozenAt = ev.Epoch, ev.At
			}
			return s.enter(StepBarrier)
		case EvApplyFailed:
			// Nothing was frozen (the edit is one transaction); hold.
			return s.hold(StatusFailed, "freeze refused: "+ev.Detail)
		}
	case StepBarrier:
		switch ev.Kind {
		case EvAcked:
			return s.enter(StepData)
		case EvAcksTimeout:
			return s.unfreeze(StatusFailed, "barrier timed out: "+ev.Detail)
		}
	case StepData:
		switch ev.Kind {
		case EvDataReady:
			return s.enter(StepFlip)
		case EvDataFailed:
			return s.unfreeze(StatusFailed, "data gate failed: "+ev.Detail)
		}
	case StepFlip:
		switch ev.Kind {
		case EvApplied:
			s.Epoch = ev.Epoch
			if s.Rollback == nil {
				l := &s.Stages[s.Stage]
				l.FlipEpoch, l.FlippedAt, l.Flipped, l.RolledBack = ev.Epoch, ev.At, true, false
				if !l.FrozenAt.IsZero() {
					l.Window = ev.At.Sub(l.FrozenAt)
				}
			} else {
				s.markRolledBack()
			}
			switch s.Pending {
			case CmdAbort:
				s.Pending = CmdNone
				return s.end(StatusAborted, "aborted by the operator; the flip of "+s.StageName()+" had already been sent and stays")
			case CmdRollback:
				s.Pending = CmdNone
				if s.Rollback == nil {
					return s.rollbackAll(ev)
				}
			}
			return s.enter(StepVerify)
		case EvApplyFailed:
			// The flip did not happen; the slots are still frozen. An abort
			// or rollback that waited for the flip follows the unfreeze.
			pending := s.Pending
			s.Pending = CmdNone
			switch pending {
			case CmdAbort:
				return s.unfreeze(StatusAborted, "aborted by the operator; the flip of "+s.StageName()+" was refused: "+ev.Detail)
			case CmdRollback:
				return s.unfreeze(StatusRolledBack, "flip refused: "+ev.Detail)
			}
			return s.unfreeze(StatusFailed, "flip refused: "+ev.Detail)
		}
	case StepVerify:
		switch ev.Kind {
		case EvVerified:
			return s.stageDone(ev)
		case EvVerifyFailed:
			if s.Rollback != nil {
				// The slots are back where they were, so the rollback is
				// done; do not ping-pong.
				s.Reason = "rolled back, but the gates still fail: " + ev.Detail
				return s.rollbackDone()
			}
			if s.Options.Emergency {
				// The sources are fenced: rolling back onto them would
				// take the users offline again. The flip stands; the
				// failure is recorded with the stage.
				s.Stages[s.Stage].Warning = "gates failed after the flip; not rolled back onto fenced cells: " + ev.Detail
				return s.stageDone(ev)
			}
			if s.Pending == CmdAbort {
				s.Pending = CmdNone
				return s.end(StatusAborted, "aborted by the operator during verify; the gates had failed: "+ev.Detail)
			}
			r := s.Plan.Stages[s.Stage].Movement().Reverse()
			return s.rollback(&r, StatusFailed, "gates failed after the flip of stage "+s.Plan.Stages[s.Stage].Name+", rolling it back: "+ev.Detail)
		}
	case StepUnfreeze:
		switch ev.Kind {
		case EvApplied:
			s.Epoch = ev.Epoch
			after := s.After
			s.After = ""
			if after == StatusRolledBack {
				// An operator rollback arrived while the stage was frozen.
				return s.rollbackAll(ev)
			}
			if after == StatusAborted {
				return s.end(StatusAborted, s.Reason)
			}
			return s.hold(after, s.Reason)
		case EvApplyFailed:
			s.After = ""
			return s.hold(StatusFailed, s.Reason+"; unfreeze refused, check the map by hand: "+ev.Detail)
		}
	}
	return nil, fmt.Errorf("unexpected in step %s", s.Step)
}

// enterStage starts stage i, skipping stages that move nothing.
func (s *State) enterStage(i int, ev Event) ([]Action, error) {
	for ; i < len(s.Plan.Stages) && s.Plan.Stages[i].Movement().Empty(); i++ {
		s.Stages[i].VerifiedAt = ev.At
	}
	s.Stage = i
	if i == len(s.Plan.Stages) {
		s.Stage = len(s.Plan.Stages) - 1
		return s.end(StatusDone, "every stage moved")
	}
	s.Stages[i].Attempts++
	s.Reason = ""
	return s.enter(StepFreeze)
}

// enter moves to step st of the current movement and returns its action.
func (s *State) enter(st StepName) ([]Action, error) {
	s.Step = st
	return s.action(), nil
}

// action is the action of the current step; nil when holding or ended.
func (s *State) action() []Action {
	if s.Status != StatusRunning {
		return nil
	}
	m := s.Movement()
	switch s.Step {
	case StepFreeze:
		c := &Change{Op: OpFreeze, Cutover: s.ID, Move: m}
		if s.Options.Emergency && s.Rollback == nil {
			from, _ := m.Cells()
			c.States = statesOf(from, router.StateFenced)
		}
		return []Action{{Kind: ActApplyMap, Change: c}}
	case StepBarrier:
		return []Action{{Kind: ActWaitAcks, Epoch: s.Epoch, Timeout: s.Options.BarrierTimeout}}
	case StepData:
		return []Action{{Kind: ActWaitData, Move: &m, Timeout: s.Options.DataTimeout}}
	case StepFlip:
		c := &Change{Op: OpFlip, Cutover: s.ID, Move: m}
		if s.Options.Drain && s.Plan.Stages[len(s.Plan.Stages)-1].Cumulative == s.Plan.Moving {
			// Only a plan that moves everything drains the cells.
			// The last stage that moves anything: later empty ones are skipped.
			last := len(s.Plan.Stages) - 1
			for last > 0 && s.Plan.Stages[last].Movement().Empty() {
				last--
			}
			switch {
			case s.Rollback == nil && s.Stage == last:
				c.States = statesOf(s.Plan.From, router.StateOffline)
			case s.Rollback != nil && s.Stages[last].Flipped:
				// The drained cells went offline with that flip; an offline
				// cell may own nothing, and they take slots back.
				c.States = statesOf(s.Plan.From, router.StateDraining)
			}
		}
		return []Action{{Kind: ActApplyMap, Change: c}}
	case StepVerify:
		return []Action{{Kind: ActVerify, Move: &m, Timeout: s.Options.Bake}}
	case StepUnfreeze:
		return []Action{{Kind: ActApplyMap, Change: &Change{Op: OpUnfreeze, Cutover: s.ID, Move: m}}}
	}
	return nil
}

// unfreeze undoes the current freeze; after it the cutover is in status
// after (failed, aborted, or rolled-back meaning "then roll back").
func (s *State) unfreeze(after Status, reason string) ([]Action, error) {
	s.After, s.Reason = after, reason
	return s.enter(StepUnfreeze)
}

func (s *State) hold(st Status, reason string) ([]Action, error) {
	// A pending pause is spent: the cutover holds anyway.
	s.Status, s.Step, s.Reason, s.Pending = st, StepHold, reason, CmdNone
	return nil, nil
}

func (s *State) end(st Status, reason string) ([]Action, error) {
	s.Status, s.Step, s.Reason, s.Pending = st, StepEnd, reason, CmdNone
	return nil, nil
}

// stageDone follows a verified stage (or rollback).
func (s *State) stageDone(ev Event) ([]Action, error) {
	if s.Rollback != nil {
		return s.rollbackDone()
	}
	s.Stages[s.Stage].VerifiedAt = ev.At
	switch s.Pending {
	case CmdAbort:
		s.Pending = CmdNone
		return s.end(StatusAborted, "aborted by the operator after stage "+s.Plan.Stages[s.Stage].Name)
	case CmdRollback:
		s.Pending = CmdNone
		return s.rollbackAll(ev)
	}
	next := s.Stage + 1
	for next < len(s.Plan.Stages) && s.Plan.Stages[next].Movement().Empty() {
		s.Stages[next].VerifiedAt = ev.At
		next++
	}
	if next >= len(s.Plan.Stages) {
		return s.end(StatusDone, "every stage moved")
	}
	name := s.Plan.Stages[s.Stage].Name
	if s.Pending == CmdPause {
		s.Pending = CmdNone
		s.Stage = next
		return s.hold(StatusPaused, "paused by the operator after stage "+name)
	}
	if !s.Options.Auto {
		s.Stage = next
		return s.hold(StatusWaiting, "stage "+name+" done; waiting for resume")
	}
	return s.enterStage(next, ev)
}

// rollback starts undoing m with the same protocol in reverse; when it is
// done the cutover becomes then (failed or rolled-back).
func (s *State) rollback(m *Movement, then Status, reason string) ([]Action, error) {
	if m.Empty() {
		return s.end(StatusRolledBack, reason)
	}
	s.Rollback, s.RollbackThen, s.Reason = m, then, reason
	return s.enter(StepFreeze)
}

// rollbackDone ends a rollback whose flip landed.
func (s *State) rollbackDone() ([]Action, error) {
	then := s.RollbackThen
	s.Rollback, s.RollbackThen = nil, ""
	if then == StatusFailed {
		return s.hold(StatusFailed, s.Reason+"; stage "+s.Plan.Stages[s.Stage].Name+
			" is back at its sources: resume retries it, rollback undoes the earlier stages, abort ends the cutover")
	}
	return s.end(StatusRolledBack, s.Reason)
}

// rollbackAll undoes every stage this cutover flipped.
func (s *State) rollbackAll(ev Event) ([]Action, error) {
	var all Movement
	for i := len(s.Stages) - 1; i >= 0; i-- {
		if s.Stages[i].Flipped && !s.Stages[i].RolledBack {
			r := s.Plan.Stages[i].Movement().Reverse()
			all.Slots = append(all.Slots, r.Slots...)
			all.Keys = append(all.Keys, r.Keys...)
		}
	}
	return s.rollback(&all, StatusRolledBack, "rolled back by the operator")
}

// markRolledBack records which stages the finished rollback undid.
func (s *State) markRolledBack() {
	in := map[string]bool{}
	for _, k := range s.Rollback.Keys {
		in["k"+k.Key] = true
	}
	for _, m := range s.Rollback.Slots {
		in[fmt.Sprint("s", m.First)] = true
	}
	for i, st := range s.Plan.Stages {
		if !s.Stages[i].Flipped {
			continue
		}
		hit := false
		for _, m := range st.Moves {
			hit = hit || in[fmt.Sprint("s", m.First)]
		}
		for _, k := range st.Keys {
			hit = hit || in["k"+k.Key]
		}
		if hit {
			s.Stages[i].RolledBack = true
		}
	}
}

// resume re-issues the current step's action (a runner restarted on the
// record), or continues a held cutover.
func (s *State) resume(ev Event) ([]Action, error) {
	switch s.Status {
	case StatusRunning:
		return s.action(), nil
	case StatusWaiting, StatusPaused:
		s.Status, s.Pending = StatusRunning, CmdNone
		return s.enterStage(s.Stage, ev)
	case StatusFailed:
		s.Status, s.Pending = StatusRunning, CmdNone
		if s.Rollback != nil {
			s.Reason = "retrying the rollback"
			return s.enter(StepFreeze)
		}
		return s.enterStage(s.Stage, ev)
	case "":
		// Created, but its runner died before the start was recorded.
		s.Status = StatusRunning
		return s.enterStage(0, ev)
	}
	return nil, fmt.Errorf("the cutover is %s", s.Status)
}

// request handles pause, abort and rollback.
func (s *State) request(ev Event) ([]Action, error) {
	if s.Status.Terminal() {
		return nil, fmt.Errorf("the cutover is %s", s.Status)
	}
	if s.Status == "" {
		// Created, never started: nothing was frozen or moved.
		if ev.Kind == EvPause {
			return nil, fmt.Errorf("the cutover has not started")
		}
		return s.end(StatusAborted, string(ev.Kind)+" before the cutover started: nothing was moved")
	}
	why := "by the operator"
	if ev.Detail != "" {
		why += ": " + ev.Detail
	}
	held := s.Status != StatusRunning
	switch ev.Kind {
	case EvPause:
		if held {
			if s.Status == StatusWaiting {
				s.Status = StatusPaused
				s.Reason = "paused " + why
			}
			return nil, nil
		}
		if s.Pending == CmdNone {
			s.Pending = CmdPause
		}
		return nil, nil
	case EvAbort:
		if held {
			return s.end(StatusAborted, "aborted "+why)
		}
		switch s.Step {
		case StepFreeze, StepBarrier, StepData:
			// The edit of a freeze step may or may not have happened;
			// unfreezing is safe either way.
			return s.unfreeze(StatusAborted, "aborted "+why+"; the frozen slots were unfrozen")
		case StepUnfreeze:
			if s.After != StatusRolledBack {
				s.After = StatusAborted
			}
			return nil, nil
		case StepVerify:
			return s.end(StatusAborted, "aborted "+why+" during verify of "+s.StageName())
		}
		// The flip is a single edit in flight: abort when it lands.
		s.Pending = CmdAbort
		return nil, nil
	case EvRollback:
		if s.Rollback != nil {
			return nil, fmt.Errorf("already rolling back")
		}
		if held {
			s.Status, s.Pending = StatusRunning, CmdNone
			return s.rollbackAll(ev)
		}
		switch s.Step {
		case StepFreeze, StepBarrier, StepData:
			return s.unfreeze(StatusRolledBack, "rolled back "+why)
		case StepUnfreeze:
			s.After = StatusRolledBack
			return nil, nil
		case StepVerify:
			return s.rollbackAll(ev)
		}
		s.Pending = CmdRollback
		return nil, nil
	}
	return nil, fmt.Errorf("unknown request")
}

func statesOf(cells []string, st router.CellState) map[string]router.CellState {
	m := map[string]router.CellState{}
	for _, c := range cells {
		m[c] = st
	}
	return m
}

// CheckState reports whether a stored record is one Step can work on.
func CheckState(s *State) error {
	switch {
	case s.ID == "":
		return fmt.Errorf("failover: record without an id")
	case s.Plan == nil || len(s.Plan.Stages) == 0:
		return fmt.Errorf("failover: cutover %s: record without a plan", s.ID)
	case len(s.Stages) != len(s.Plan.Stages):
		return fmt.Errorf("failover: cutover %s: %d stage logs for %d stages", s.ID, len(s.Stages), len(s.Plan.Stages))
	case s.Stage < 0 || s.Stage >= len(s.Plan.Stages):
		return fmt.Errorf("failover: cutover %s: stage %d of %d", s.ID, s.Stage, len(s.Plan.Stages))
	}
	switch s.Status {
	case "", StatusRunning, StatusWaiting, StatusPaused, StatusFailed, StatusDone, StatusAborted, StatusRolledBack:
	default:
		return fmt.Errorf("failover: cutover %s: unknown status %q", s.ID, s.Status)
	}
	switch s.Step {
	case "", StepFreeze, StepBarrier, StepData, StepFlip, StepVerify, StepUnfreeze, StepHold, StepEnd:
	default:
		return fmt.Errorf("failover: cutover %s: unknown step %q", s.ID, s.Step)
	}
	return nil
}

// NewID returns a cutover ID: kind, UTC time to the second and 4 random
// hex digits ("cut-20261121-031502-9f3a"). IDs sort by start time.
func NewID(kind string, now time.Time) string {
	return fmt.Sprintf("%s-%s-%04x", kind, now.UTC().Format("20060102-150405"), rand.IntN(1<<16))
}
