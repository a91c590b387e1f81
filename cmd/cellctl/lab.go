package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/mysql"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
)

// defaultLabDir is where `cellctl lab` keeps its servers; .gitignore
// covers .cellkit/.
const defaultLabDir = ".cellkit/lab"

// labStartTimeout bounds `lab up`: a cold start is about a second, a
// restart from data with crash recovery a few.
const labStartTimeout = 2 * time.Minute

func (a *app) newLabCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a local MariaDB replication lab: a server per IDC, GTID + semi-sync both ways",
		Long: `Run a local MariaDB replication lab for the mysql-gtid data mover: one server
per IDC (idc-a, idc-b) as local processes on loopback ports, each a master and
a replica of the other, with GTID replication and semi-synchronous
replication on in both directions. The servers keep their data, sockets and
logs in --dir (default ` + defaultLabDir + `, which git ignores) and keep running after
cellctl exits; ` + "`lab down`" + ` stops them.

Needs MariaDB 10.3 or newer: on Debian or Ubuntu, scripts/tools/mariadb.sh
installs it. A lab is for tests and demos: root has no password and the
servers listen on 127.0.0.1 only.`,
		Example: `  cellctl lab up --db mariadb
  cellctl lab status -o json
  cellctl lab down`,
		Args: noSubcommand,
		RunE: showHelp,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", defaultLabDir, "directory of the lab's servers (data, sockets, logs, lab.json)")
	cmd.AddCommand(a.newLabUpCmd(&dir), a.newLabStatusCmd(&dir), a.newLabDownCmd(&dir))
	return cmd
}

// labResult is a lab as `lab up` and `lab status` print it.
type labResult struct {
	Dir string `json:"dir"`
	DB  string `json:"db"`
	// State is "started", "running" (found running, left alone),
	// "restarted" (servers that were down started again), "partly
	// running" or "stopped".
	State string `json:"state"`
	// Restarted names the servers `lab up` started again.
	Restarted []string `json:"restarted,omitempty"`
	// Replication is "semi-sync" or "async" (how the lab was started).
	Replication string      `json:"replication"`
	Note        string      `json:"note,omitempty"`
	Servers     []labServer `json:"servers"`
}

type labServer struct {
	Name    string `json:"name"`
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
	DSN     string `json:"dsn"`
	// GTID is the server's @@gtid_current_pos.
	GTID        string          `json:"gtid"`
	Replication []labReplica    `json:"replication,omitempty"`
	SemiSync    *mysql.SemiSync `json:"semiSync,omitempty"`
	Error       string          `json:"error,omitempty"`
}

// labReplica is one replication connection of a server: from a peer.
type labReplica struct {
	From          string `json:"from"`
	IO            string `json:"io"`
	SQL           bool   `json:"sql"`
	SecondsBehind *int64 `json:"secondsBehind"`
	Error         string `json:"error,omitempty"`
}

func (r labResult) writeTable(w io.Writer) error {
	tw := newTabWriter(w)
	row(tw, "lab", r.Dir)
	state := r.State
	if len(r.Restarted) > 0 {
		state += " (" + strings.Join(r.Restarted, ", ") + ")"
	}
	row(tw, "state", state)
	row(tw, "replication", "GTID, "+r.Replication+", both ways")
	if r.Note != "" {
		row(tw, "note", r.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTabWriter(w)
	row(tw, "SERVER", "PORT", "PID", "DSN", "GTID", "REPLICATION", "SEMI-SYNC")
	for _, s := range r.Servers {
		pid := "-"
		if s.PID != 0 {
			pid = fmt.Sprint(s.PID)
		}
		if s.Error != "" {
			row(tw, s.Name, s.Port, pid, s.DSN, "-", "-", s.Error)
			continue
		}
		var repl []string
		for _, rp := range s.Replication {
			lag := "lag ?"
			if rp.SecondsBehind != nil {
				lag = fmt.Sprintf("lag %ds", *rp.SecondsBehind)
			}
			line := fmt.Sprintf("from %s: IO %s, SQL %s, %s", rp.From, strings.ToLower(rp.IO), yesNo(rp.SQL), lag)
			if rp.Error != "" {
				line += ": " + clip(rp.Error, 80)
			}
			repl = append(repl, line)
		}
		row(tw, s.Name, s.Port, pid, s.DSN, orDash(s.GTID), joinOrDash(repl, "; "), semiSyncText(s.SemiSync))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.State != "stopped" {
		dirFlag := ""
		if r.Dir != "" {
			dirFlag = " --dir " + r.Dir
		}
		fmt.Fprintf(w, "\nstop it with: cellctl lab down%s\n", dirFlag)
	}
	return nil
}

func semiSyncText(s *mysql.SemiSync) string {
	if s == nil {
		return "-"
	}
	master := "off"
	switch {
	case s.MasterEnabled && s.MasterOn:
		master = fmt.Sprintf("on (%s)", plural(s.MasterClients, "replica", "replicas"))
	case s.MasterEnabled:
		master = "FELL BACK to async"
	}
	replica := "off"
	switch {
	case s.ReplicaEnabled && s.ReplicaOn:
		replica = "on"
	case s.ReplicaEnabled:
		replica = "enabled, not acknowledging"
	}
	return "master " + master + ", replica " + replica
}

// labDownResult is what `lab down` did.
type labDownResult struct {
	Dir string `json:"dir"`
	// State is "removed" (stopped, files removed), "stopped" (stopped,
	// data kept) or "none" (there was no lab).
	State   string   `json:"state"`
	Stopped []string `json:"stopped,omitempty"`
}

func (r labDownResult) writeTable(w io.Writer) error {
	switch r.State {
	case "none":
		_, err := fmt.Fprintf(w, "no lab in %s: nothing to stop\n", r.Dir)
		return err
	case "stopped":
		_, err := fmt.Fprintf(w, "stopped %s; the data stays in %s (cellctl lab up --dir %s starts it again)\n", joinOrDash(r.Stopped, ", "), r.Dir, r.Dir)
		return err
	}
	_, err := fmt.Fprintf(w, "stopped %s and removed %s\n", joinOrDash(r.Stopped, ", "), r.Dir)
	return err
}

func (a *app) newLabUpCmd(dir *string) *cobra.Command {
	var db, database string
	var async bool
	var basePort int
	cmd := &cobra.Command{
		Use:   "up --db mariadb [--dir DIR] [--async]",
		Short: "Start the lab, or report the one running (idempotent)",
		Long: `Start the lab's servers, wait until replication runs both ways (and semi-sync
is in force on each master unless --async), create --database on them, and
print each server's port, DSN, replication and semi-sync state.

A lab already running in --dir is reported, not restarted; servers of it that
are down (killed, or stopped by ` + "`lab down --keep-data`" + `) are started again from
their data.`,
		Example: `  cellctl lab up --db mariadb
  cellctl lab up --db mariadb --async --dir /tmp/lab --base-port 13306`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if db != "mariadb" {
				return usagef("--db %q: the lab runs mariadb only", db)
			}
			if !validDatabaseName(database) {
				return usagef("--database %q: want letters, digits and '_'", database)
			}
			cfg := mysqllab.Config{Dir: *dir, Async: async, BasePort: basePort, Detach: true, StartTimeout: labStartTimeout}
			if err := cfg.Validate(); err != nil {
				flags := strings.NewReplacer("BasePort", "--base-port", "Dir", "--dir")
				return usagef("%s", flags.Replace(strings.TrimPrefix(err.Error(), mysqllab.ErrInvalidConfig.Error()+": ")))
			}
			ctx, cancel := context.WithTimeout(a.ctx, labStartTimeout)
			defer cancel()
			res := labResult{DB: db}
			lab, err := mysqllab.Attach(*dir)
			switch {
			case errors.Is(err, mysqllab.ErrNoLab):
				if lab, err = mysqllab.Start(ctx, cfg); err != nil {
					return a.labErr(*dir, err)
				}
				res.State = "started"
			case err != nil:
				return a.labErr(*dir, err)
			default:
				res.State = "running"
				for _, name := range lab.Servers() {
					if lab.Running(name) {
						continue
					}
					if err := lab.Restart(ctx, name); err != nil {
						lab.Release()
						return a.labErr(*dir, err)
					}
					res.Restarted = append(res.Restarted, name)
				}
				if len(res.Restarted) > 0 {
					res.State = "restarted"
				}
				if err := lab.WaitReady(ctx); err != nil {
					lab.Release()
					return a.labErr(*dir, err)
				}
				if async != lab.Async() {
					res.Note = fmt.Sprintf("the lab was started with%s --async; run `cellctl lab down` first to change that", map[bool]string{true: "", false: "out"}[lab.Async()])
				}
			}
			defer lab.Release() // the servers keep running
			if err := lab.CreateDatabase(ctx, database); err != nil {
				return a.labErr(*dir, err)
			}
			if err := a.fillLab(ctx, lab, database, &res); err != nil {
				return err
			}
			return a.print(res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&db, "db", "mariadb", "database engine of the lab (mariadb)")
	f.StringVar(&database, "database", "pay", "database to create on the servers; the DSNs printed name it")
	f.BoolVar(&async, "async", false, "replicate asynchronously (default: semi-synchronous both ways)")
	f.IntVar(&basePort, "base-port", 0, "port of the first server; the others follow (default: free ports)")
	return cmd
}

func (a *app) newLabStatusCmd(dir *string) *cobra.Command {
	var database string
	cmd := &cobra.Command{
		Use:   "status [--dir DIR]",
		Short: "Show the lab's servers, replication and semi-sync state",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, err := mysqllab.Attach(*dir)
			if err != nil {
				return a.labErr(*dir, err)
			}
			defer lab.Release()
			ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
			defer cancel()
			res := labResult{DB: "mariadb"}
			if err := a.fillLab(ctx, lab, database, &res); err != nil {
				return err
			}
			running := 0
			for _, s := range res.Servers {
				if s.Running {
					running++
				}
			}
			switch running {
			case len(res.Servers):
				res.State = "running"
			case 0:
				res.State = "stopped"
			default:
				res.State = "partly running"
			}
			return a.print(res)
		},
	}
	cmd.Flags().StringVar(&database, "database", "pay", "database the DSNs printed name")
	return cmd
}

func (a *app) newLabDownCmd(dir *string) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "down [--dir DIR] [--keep-data]",
		Short: "Stop the lab's servers and remove their data (unless --keep-data)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, err := mysqllab.Attach(*dir)
			if errors.Is(err, mysqllab.ErrNoLab) {
				return a.print(labDownResult{Dir: *dir, State: "none"})
			}
			if err != nil {
				return a.labErr(*dir, err)
			}
			res := labDownResult{Dir: lab.Dir(), State: "removed"}
			for _, name := range lab.Servers() {
				if lab.Running(name) {
					res.Stopped = append(res.Stopped, name)
				}
			}
			if keep {
				res.State = "stopped"
				ctx, cancel := context.WithTimeout(a.ctx, labStartTimeout)
				defer cancel()
				err = errors.Join(lab.StopAll(ctx), lab.Release())
			} else {
				err = lab.Close()
			}
			if err != nil {
				return a.labErr(*dir, err)
			}
			return a.print(res)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-data", false, "keep the servers' data: `lab up` starts them again from it")
	return cmd
}

// fillLab reads the lab's state into res.
func (a *app) fillLab(ctx context.Context, lab *mysqllab.Lab, database string, res *labResult) error {
	res.Dir = lab.Dir()
	res.Replication = "semi-sync"
	if lab.Async() {
		res.Replication = "async"
	}
	sts, err := lab.Status(ctx)
	if err != nil {
		if a.ctx.Err() != nil {
			return errInterrupted
		}
		return err
	}
	for _, st := range sts {
		s := labServer{Name: st.Server, Port: st.Port, PID: st.PID, Running: st.Running, DSN: lab.DSN(st.Server, database), Error: st.Error}
		if st.Error == "" {
			s.GTID = st.CurrentPos
			ss := st.SemiSync
			s.SemiSync = &ss
			for _, r := range st.Replicas {
				e := r.LastSQLError
				if e == "" {
					e = r.LastIOError
				}
				s.Replication = append(s.Replication, labReplica{From: r.Connection, IO: r.IORunning, SQL: r.SQLRunning, SecondsBehind: r.SecondsBehind, Error: e})
			}
		}
		res.Servers = append(res.Servers, s)
	}
	return nil
}

// labErr adds what to do next to the lab's errors.
func (a *app) labErr(dir string, err error) error {
	if a.ctx.Err() != nil {
		return errInterrupted
	}
	le := &labError{msg: strings.ReplaceAll(strings.TrimPrefix(err.Error(), "mysqllab: "), ": mysqllab: ", ": "), err: err}
	switch {
	case errors.Is(err, mysqllab.ErrNotInstalled):
		return &hintError{le, "on Debian or Ubuntu run scripts/tools/mariadb.sh (it installs mariadb-server and mariadb-client); elsewhere install MariaDB 10.3 or newer"}
	case errors.Is(err, mysqllab.ErrNoLab):
		return &hintError{le, "start one with `cellctl lab up --db mariadb`, or point --dir at it"}
	case errors.Is(err, mysqllab.ErrStart):
		return &hintError{le, fmt.Sprintf("each server's log is %s/SERVER/error.log; `cellctl lab down --dir %s` stops what is left", dir, dir)}
	}
	return le
}

// labError is an error of the lab without its package prefix.
type labError struct {
	msg string
	err error
}

func (e *labError) Error() string { return e.msg }
func (e *labError) Unwrap() error { return e.err }

// clip cuts s to n runes for a table cell; -o json has it whole.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func validDatabaseName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
