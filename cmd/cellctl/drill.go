package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/chaos/drill"
	"github.com/cellkit/cellkit/chaos/labdrill"
	"github.com/cellkit/cellkit/chaos/scenarios"
)

func (a *app) newDrillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drill",
		Short: "Run chaos drills against a local lab: faults, failovers, MTTR/RPO reports",
		Long: `Run a drill scenario (YAML: load, waits, faults, heals, cutovers, failovers,
expectations) against a fresh local lab started in this process — embedded
etcd (one member or three), four paycell cells in two IDCs, cellrouter, a
virtual bank, and for db mariadb two real MariaDB servers replicating to each
other — with every network path wired through fault proxies. At the end the
books are checked and a report is written: Markdown, JSON and an SVG chart of
throughput and errors, with the timeline, time to detect, MTTR, RPO (every
acknowledged payment lost, named) and each invariant.

The built-in scenarios ('cellctl drill list') run by name. How to write one:
docs/runbooks/drills.md.`,
		Example: `  cellctl drill list
  cellctl drill run planned-idc-switch
  cellctl drill run idc-power-loss --out reports/
  cellctl drill run ./my-drill.yaml --db mariadb`,
		Args: noSubcommand,
		RunE: showHelp,
	}
	cmd.AddCommand(a.newDrillListCmd(), a.newDrillRunCmd())
	return cmd
}

// builtinScenarios returns the embedded scenarios by name.
func builtinScenarios() (map[string]*drill.Scenario, error) { return scenarios.Load() }

func (a *app) newDrillListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the built-in drill scenarios",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all, err := builtinScenarios()
			if err != nil {
				return err
			}
			names := make([]string, 0, len(all))
			for n := range all {
				names = append(names, n)
			}
			slices.Sort(names)
			if a.output == "json" {
				var list []*drill.Scenario
				for _, n := range names {
					list = append(list, all[n])
				}
				return json.NewEncoder(a.stdout).Encode(list)
			}
			for _, n := range names {
				db := all[n].Lab.DB
				if db == "" {
					db = "sqlite or mariadb"
				}
				fmt.Fprintf(a.stdout, "%-22s %-18s %s\n", n, "["+db+"]", clipLine(all[n].Description, 90))
			}
			return nil
		},
	}
}

// clipLine folds s's whitespace into single spaces and clips it to n runes.
func clipLine(s string, n int) string { return clip(strings.Join(strings.Fields(s), " "), n) }

type drillFlags struct {
	db, dir, out string
	keep         bool
	timeout      time.Duration
}

func (a *app) newDrillRunCmd() *cobra.Command {
	var f drillFlags
	cmd := &cobra.Command{
		Use:   "run FILE|NAME",
		Short: "Run one drill scenario and write its report",
		Long: `Run one drill scenario — a built-in one by name, or a YAML file — against a
fresh local lab, then write the report to --out (NAME.md, NAME.json,
NAME.svg) and print a summary. The lab runs in --dir (a temporary directory
by default, removed at the end unless --keep).

--db picks the database when the scenario does not: sqlite (embedded, the
default) or mariadb (needs MariaDB installed: scripts/tools/mariadb.sh).

Exit status 0 when the drill passed (every expectation held), 1 when it
failed or could not run, 2 for a bad scenario file or flags.`,
		Example: `  cellctl drill run planned-idc-switch
  cellctl drill run idc-power-loss --out reports/
  cellctl drill run ./drills/gray.yaml --db mariadb -o json`,
		Args: exactArgs(1, "a scenario file or built-in name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.db != "" && f.db != "sqlite" && f.db != "mariadb" {
				return usagef("--db %q: want sqlite or mariadb", f.db)
			}
			if f.timeout <= 0 {
				return usagef("--max-time %v: want a positive duration", f.timeout)
			}
			sc, file, err := loadScenario(args[0])
			if err != nil {
				return err
			}
			return a.runDrill(sc, file, f)
		},
	}
	cmd.Flags().StringVar(&f.db, "db", "", "database when the scenario does not say: sqlite (default) or mariadb")
	cmd.Flags().StringVar(&f.dir, "dir", "", "directory for the lab's data (default: a temporary directory)")
	cmd.Flags().StringVar(&f.out, "out", "drill-reports", "directory for the report (NAME.md, NAME.json, NAME.svg)")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the lab's data directory")
	cmd.Flags().DurationVar(&f.timeout, "max-time", 15*time.Minute, "give up on the drill after this long")
	return cmd
}

// loadScenario reads a scenario file, or a built-in one by name.
func loadScenario(arg string) (*drill.Scenario, string, error) {
	if st, err := os.Stat(arg); err == nil && !st.IsDir() {
		sc, err := drill.Load(arg)
		if err != nil {
			if errors.Is(err, drill.ErrBadScenario) {
				return nil, "", usagef("%v", err)
			}
			return nil, "", err
		}
		return sc, arg, nil
	}
	all, err := builtinScenarios()
	if err != nil {
		return nil, "", fmt.Errorf("built-in scenarios: %w", err)
	}
	if sc, ok := all[strings.TrimSuffix(arg, ".yaml")]; ok {
		return sc, "chaos/scenarios/" + sc.Name + ".yaml", nil
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, "", usagef("%s: no such file, and no built-in scenario of that name (built-in: %s)", arg, strings.Join(names, ", "))
}

func (a *app) runDrill(sc *drill.Scenario, file string, f drillFlags) error {
	dir := f.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "cellkit-drill-")
		if err != nil {
			return err
		}
		dir = tmp
		if !f.keep {
			defer os.RemoveAll(tmp)
		}
	}
	ctx, cancel := context.WithTimeout(a.ctx, f.timeout)
	defer cancel()
	opt := labdrill.Options{Dir: dir, DB: f.db, File: file}
	if a.output == "table" {
		fmt.Fprintf(a.stdout, "drill %s: %s\n\n", sc.Name, clipLine(sc.Description, 200))
		opt.OnEvent = func(ev drill.Event) {
			fmt.Fprintf(a.stdout, "%8s  %-9s %s\n", fmt.Sprintf("%.1fs", time.Duration(ev.Offset).Seconds()), ev.Kind, ev.Text)
		}
	}
	rep, err := labdrill.Run(ctx, sc, opt)
	if err != nil {
		return fmt.Errorf("drill %s: %w", sc.Name, err)
	}
	paths, werr := rep.WriteFiles(f.out, sc.Name)
	if a.output == "json" {
		if err := rep.WriteJSON(a.stdout); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(a.stdout)
		fmt.Fprintln(a.stdout, rep.Summary())
		if werr == nil {
			fmt.Fprintf(a.stdout, "report: %s\n", strings.Join(paths, ", "))
		}
	}
	if werr != nil {
		return fmt.Errorf("drill %s: writing the report: %w", sc.Name, werr)
	}
	if f.keep && f.dir == "" {
		fmt.Fprintf(a.stderr, "lab data kept in %s\n", dir)
	}
	if !rep.Pass {
		return fmt.Errorf("drill %s failed (see %s)", sc.Name, filepath.Join(f.out, sc.Name+".md"))
	}
	return nil
}
