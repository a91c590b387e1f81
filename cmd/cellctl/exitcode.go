package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// Exit codes. This file is the only place that decides them; `cellctl --help`
// and docs/cli.md list them.
const (
	exitOK          = 0 // success, including "nothing changed"
	exitError       = 1 // anything not listed below
	exitUsage       = 2 // bad flags or arguments, missing --reason, bad slot range or count, bad -o
	exitUnreachable = 3 // etcd did not answer
	exitConflict    = 4 // lost the compare-and-swap race too many times; the map or cell already exists
	exitInvalid     = 5 // the stored or given map is corrupt or invalid, or the change would make it so
	exitNotFound    = 6 // no map, unknown cell, key not whitelisted, no such cutover
	exitNotFinished = 7 // the cutover failed, was aborted or rolled back, or its runner stopped midway
	exitRefused     = 8 // refused for safety: a failover while the source's guards are alive, or unconfirmed without self-fencing
)

const exitCodesHelp = `Exit codes:
  0  ok (also when a change turned out to change nothing)
  1  any other error
  2  usage: bad flags or arguments, missing --reason, bad slot range, bad -o
  3  etcd unreachable (the endpoints are named)
  4  conflict: the map changed concurrently too many times, or already exists;
     another cutover is in progress or holds the lock; a command that does not
     apply to the cutover's status
  5  invalid or corrupt map or cutover record, or a change refused because the
     map would be invalid
  6  not found: no map, unknown cell, key not whitelisted, no such cutover
  7  cutover not finished: it failed, was aborted or rolled back, or its runner
     stopped midway (interrupted, lock lost); the record says where
  8  refused for safety: emergency failover while the source's guards are alive
     (without --force), or without self-fencing (without --confirm-idc-down)`

// usageError is a mistake in how cellctl was called. It is reported with the
// command's usage line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err (an argument that failed a router check) as a usage error.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// errMapInvalid is returned after `map validate` has printed the problems.
var errMapInvalid = errors.New("map is invalid")

// errInterrupted is what a command returns when SIGINT or SIGTERM ended it.
var errInterrupted = errors.New("interrupted")

// exitCode maps an error to the process exit code. Order matters: a corrupt
// map is reported as such even though its decode error also wraps router
// sentinels, and an authentication failure is not "unreachable" even though
// Dial wraps it in an *UnreachableError.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errNotFinished):
		return exitNotFinished
	case errors.Is(err, errRefused), errors.Is(err, etcdcutover.ErrAlive):
		return exitRefused
	case isAuthError(err):
		return exitError
	case errors.Is(err, etcdstore.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, etcdstore.ErrCorruptMap),
		errors.Is(err, etcdcutover.ErrCorruptRecord),
		errors.Is(err, errCorruptSettings),
		errors.Is(err, errMapInvalid),
		errors.Is(err, router.ErrInvalidTable),
		errors.Is(err, router.ErrMalformedMap),
		errors.Is(err, router.ErrUnsupportedSchema),
		errors.Is(err, router.ErrCellInUse),
		errors.Is(err, etcdstore.ErrTooLarge),
		errors.Is(err, router.ErrEpochRegressed):
		return exitInvalid
	case errors.As(err, new(*usageError)),
		errors.Is(err, etcdstore.ErrNoReason),
		errors.Is(err, etcdstore.ErrBadConfig),
		errors.Is(err, router.ErrBadSlotCount),
		errors.Is(err, router.ErrBadSlotRange),
		errors.Is(err, router.ErrBadKey),
		errors.Is(err, router.ErrBadCell),
		errors.Is(err, router.ErrMalformedID),
		errors.Is(err, failover.ErrBadPlan):
		return exitUsage
	case errors.Is(err, etcdstore.ErrConflict),
		errors.Is(err, etcdstore.ErrMapExists),
		errors.Is(err, etcdstore.ErrAuditExists),
		errors.Is(err, router.ErrDuplicateCell),
		errors.Is(err, etcdcutover.ErrLocked),
		errors.Is(err, etcdcutover.ErrBusy),
		errors.Is(err, etcdcutover.ErrExists),
		errors.Is(err, failover.ErrBadEvent):
		return exitConflict
	case errors.Is(err, etcdstore.ErrNoMap),
		errors.Is(err, etcdstore.ErrMapDeleted),
		errors.Is(err, router.ErrUnknownCell),
		errors.Is(err, router.ErrNotWhitelisted),
		errors.Is(err, etcdcutover.ErrNotFound):
		return exitNotFound
	}
	return exitError
}

func isAuthError(err error) bool {
	for _, e := range []error{rpctypes.ErrAuthFailed, rpctypes.ErrPermissionDenied, rpctypes.ErrInvalidAuthToken,
		rpctypes.ErrUserEmpty, rpctypes.ErrAuthNotEnabled, rpctypes.ErrUserNotFound} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// hint suggests what to do next, or "".
func hint(err error) string {
	var le *etcdembed.ListenError
	var he *hintError
	switch {
	case errors.As(err, &he):
		return he.hint
	case isAuthError(err):
		return "check --user (name:password, or the password in CELLKIT_ETCD_PASSWORD)"
	case errors.Is(err, etcdstore.ErrUnreachable):
		return "is `cellctl dev` running? set --etcd or CELLKIT_ETCD to your etcd endpoints"
	case errors.Is(err, etcdstore.ErrCorruptMap):
		return "`cellctl map validate` names every problem; `cellctl map init --force --from-file good.json --reason ...` replaces the map"
	case errors.Is(err, etcdstore.ErrNoReason):
		return `add --reason "why" (it is recorded in the audit log)`
	case errors.Is(err, etcdstore.ErrNoMap):
		return "create one with `cellctl map init --cell ID@IDC ... --reason WHY`, or check --cluster and --etcd"
	case errors.Is(err, etcdstore.ErrMapExists):
		return "`cellctl map show` shows it; add --force to replace it"
	case errors.Is(err, etcdstore.ErrConflict):
		return "someone else is changing the map right now; check `cellctl map history` and retry"
	case errors.Is(err, etcdstore.ErrAuditExists):
		return "the map's epoch was rewritten by hand; `cellctl map history` shows the audit log"
	case errors.Is(err, router.ErrUnknownCell):
		return "`cellctl cell list` shows the cells"
	case errors.Is(err, router.ErrNotWhitelisted):
		return "`cellctl whitelist list` shows the whitelist"
	case errors.Is(err, router.ErrCellInUse):
		return "move its slots and whitelisted keys to another cell first"
	case errors.Is(err, router.ErrInvalidTable):
		return "nothing was written; `cellctl map show` shows the current map"
	case errors.Is(err, etcdcutover.ErrCorruptRecord):
		return "`cellctl cutover list` names the corrupt record; a corrupt record blocks new cutovers until it is repaired or deleted (see docs/runbooks/cutover.md)"
	case errors.As(err, &le) && errors.Is(err, syscall.EADDRINUSE):
		flag := "--listen"
		if le.Role == "peer" {
			flag = "--peer"
		}
		return fmt.Sprintf("is another `cellctl dev` (or etcd) running? stop it or pick another address with %s", flag)
	}
	return ""
}

// report prints err for people: one line naming the problem, then a hint or,
// for usage errors, the usage line of the command.
func report(w io.Writer, cmd *cobra.Command, err error) {
	fmt.Fprintf(w, "cellctl: %s\n", message(err))
	if errors.As(err, new(*usageError)) && cmd != nil {
		if cmd.HasAvailableSubCommands() {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
					names = append(names, c.Name())
				}
			}
			fmt.Fprintf(w, "usage: %s COMMAND (one of: %s)\n", cmd.CommandPath(), strings.Join(names, ", "))
		} else {
			fmt.Fprintf(w, "usage: %s\n", cmd.UseLine())
		}
		fmt.Fprintf(w, "run '%s --help' for more\n", cmd.CommandPath())
		return
	}
	if h := hint(err); h != "" {
		fmt.Fprintf(w, "hint: %s\n", h)
	}
}

// message is err's text without the package prefixes that mean nothing to
// an operator ("router: ", "etcdstore: ").
func message(err error) string {
	if errors.Is(err, context.Canceled) {
		return errInterrupted.Error()
	}
	msg := err.Error()
	for _, p := range []string{"router: ", "etcdstore: ", "etcdembed: ", "etcdcutover: ", "etcdcell: ", "failover: ", "prometheus: "} {
		msg = strings.TrimPrefix(msg, p)
		msg = strings.ReplaceAll(msg, ": "+p, ": ")
	}
	return msg
}
