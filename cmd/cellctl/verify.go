package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/lab/books"
	"github.com/cellkit/cellkit/lab/load"
	"github.com/cellkit/cellkit/paycell/bank"
)

type verifyFlags struct {
	dbs        []string
	acks       string
	bankURL    string
	replicated bool
}

func (a *app) newVerifyCmd() *cobra.Command {
	var f verifyFlags
	cmd := &cobra.Command{
		Use:   "verify --db CELL=DSN... [--acks FILE] [--bank URL] [--replicated]",
		Short: "Check the payment cells' books: nothing lost, nothing twice, money conserved",
		Long: `Read the books of every paycell cell and check the invariants a drill checks:
every acknowledged payment (from --acks, a JSON array of the load generator's
acknowledgements) exists exactly once, at the cell that owns it in the current
map; no order is paid twice; every cell's ledger balances to zero; money is
conserved against the bank's totals (--bank, a paycell virtual bank's URL);
no rows are left behind in cells that no longer own them. Quiesce first (stop
the load, let the bank's callbacks land).

Cells sharing one DSN share a database. --replicated says the databases
replicate to each other (mysql-gtid): every row is then expected in each.
The guards' admission records live in the processes that admitted the writes,
so the "no slot written by two cells" check runs in drills, not here.

Exit status 0 when every invariant holds, 1 when one does not.`,
		Example: `  cellctl verify --db a1=sqlite:a1.db --db a2=sqlite:a2.db --db b1=sqlite:b1.db --db b2=sqlite:b2.db
  cellctl verify --db a1=mysql://root@127.0.0.1:3306/pay --db a2=mysql://root@127.0.0.1:3306/pay \
      --db b1=mysql://root@127.0.0.1:3307/pay --db b2=mysql://root@127.0.0.1:3307/pay --replicated \
      --acks acks.json --bank http://127.0.0.1:8090`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.dbs) == 0 {
				return usagef("give every cell's database: --db CELL=DSN (sqlite:PATH or mysql://USER@HOST:PORT/DB)")
			}
			return a.verify(f)
		},
	}
	cmd.Flags().StringArrayVar(&f.dbs, "db", nil, "a cell's database, CELL=DSN (repeat for every cell)")
	cmd.Flags().StringVar(&f.acks, "acks", "", "JSON file of acknowledged writes to look for (lab/load's Ack records)")
	cmd.Flags().StringVar(&f.bankURL, "bank", "", "the virtual bank's URL, for its totals (money conservation)")
	cmd.Flags().BoolVar(&f.replicated, "replicated", false, "the databases replicate to each other (mysql-gtid)")
	return cmd
}

func (a *app) verify(f verifyFlags) error {
	byDSN := map[string][]string{}
	dsnOf := map[string]sqldb.DSN{}
	var order []string
	seen := map[string]sqldb.DSN{}
	for _, d := range f.dbs {
		id, p, err := parseCellDB(d, seen)
		if err != nil {
			return err
		}
		seen[id] = p
		dsn := p.String() // cells on one database share it
		if byDSN[dsn] == nil {
			order = append(order, dsn)
			dsnOf[dsn] = p
		}
		byDSN[dsn] = append(byDSN[dsn], id)
	}
	var acks []load.Ack
	if f.acks != "" {
		data, err := os.ReadFile(f.acks)
		if err != nil {
			return usagef("--acks: %v", err)
		}
		if err := json.Unmarshal(data, &acks); err != nil {
			return usagef("--acks %s: not a JSON array of acknowledgements: %v", f.acks, err)
		}
	}
	t, err := a.current()
	if err != nil {
		return err
	}
	for id := range seen {
		if _, ok := t.Cell(id); !ok {
			return usagef("--db %s: no such cell in the map (epoch %d)", id, t.Epoch())
		}
	}
	for _, c := range t.Cells() {
		if _, ok := seen[c.ID]; !ok && len(t.SlotsOf(c.ID)) > 0 {
			return usagef("cell %s owns slots but has no --db: give every cell's database", c.ID)
		}
	}
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Minute)
	defer cancel()
	in := books.Input{Table: t, Acks: acks, Replicated: f.replicated}
	for _, dsn := range order {
		db, err := sqldb.OpenDSN(ctx, dsnOf[dsn])
		if err != nil {
			return fmt.Errorf("open %s: %w", strings.Join(byDSN[dsn], ","), err)
		}
		defer db.Close()
		cells := byDSN[dsn]
		slices.Sort(cells)
		in.Databases = append(in.Databases, books.Database{Name: strings.Join(cells, ","), DB: db, Cells: cells})
	}
	for _, w := range t.Whitelist() {
		in.Pinned = append(in.Pinned, w.Key)
	}
	if f.bankURL != "" {
		tot, err := bank.NewClient(f.bankURL, nil).Totals(ctx)
		if err != nil {
			return err
		}
		in.BankIn, in.BankOut = tot.DeliveredDeposits, tot.DeliveredPayouts
	}
	rep, err := books.Check(ctx, in)
	if err != nil {
		return err
	}
	if a.output == "json" {
		if err := json.NewEncoder(a.stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		for _, inv := range rep.Invariants {
			mark := "ok  "
			if !inv.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(a.stdout, "%s %s: %s\n", mark, inv.Name, inv.Detail)
			for _, v := range inv.Violations {
				fmt.Fprintf(a.stdout, "       %s\n", v)
			}
			if inv.Count > len(inv.Violations) {
				fmt.Fprintf(a.stdout, "       ... %d in all\n", inv.Count)
			}
		}
		if f.bankURL == "" {
			fmt.Fprintln(a.stdout, "note: no --bank: money is checked against zero bank traffic")
		}
		fmt.Fprintln(a.stdout, "note: the slot-overlap check needs the guards' admission records; drills run it")
	}
	if !rep.OK() {
		return fmt.Errorf("verify: %d invariant(s) do not hold", len(rep.Failed()))
	}
	return nil
}
