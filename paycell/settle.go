package paycell

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/clock"
)

// Admitter is the part of *cell.Guard the settler uses: it admits a write
// for a key only while this cell owns it and the key is not frozen.
type Admitter interface {
	Admit(ctx context.Context, key string, kind cell.Kind, reqEpoch uint64) (cell.Admission, error)
}

// SettleMethod names the settler in admission records.
const SettleMethod = "paycell/settle"

// SettlerConfig configures a Settler. Zero values mean the defaults.
type SettlerConfig struct {
	// Guard admits each owner key whose legs a round settles (the cell
	// instance's *cell.Guard). Required: without it a settler could write
	// rows of a slot being moved.
	Guard Admitter
	// Instance names the guard instance in admission records.
	Instance string
	// Every is the pause between rounds of Run. Default 1s.
	Every time.Duration
	// MaxOwners bounds the owner keys one round settles. Default 256.
	MaxOwners int
	// OnAdmit and OnRelease, if set, receive an admission.Record per owner
	// key a round admitted (Method SettleMethod), like the guard
	// middlewares' hooks, so that single-writer checks see the settler.
	OnAdmit, OnRelease func(admission.Record)
	// Clock paces Run and stamps records. Default the service's clock.
	Clock clock.Clock
	// Logger receives round summaries and errors. Default the service's.
	Logger *slog.Logger
}

// Validate checks the configuration.
func (c SettlerConfig) Validate() error {
	if c.Guard == nil {
		return fmt.Errorf("paycell: settler needs the cell's guard: %w", ErrBadConfig)
	}
	if c.Every < 0 || c.MaxOwners < 0 {
		return fmt.Errorf("paycell: settler: negative Every or MaxOwners: %w", ErrBadConfig)
	}
	return nil
}

// Settler nets merchants' cell-local pending credits into settled ones, per
// cell, in periodic rounds: a merchant is a shared "hot" account, so
// payments credit mpend:<merchant> legs owned by the paying user (they move
// with the user's slot), and the settler turns them into cell-scoped
// settlement transactions (slot -1, owner "cell:<cell>": mpend:<m> -sum,
// merchant:<m> +sum), marking the settled legs with the batch ID, in one
// local transaction. It is idempotent and safe to run beside payments and
// beside another instance's settler: a leg is claimed by exactly one batch.
//
// It touches only rows whose owner key the cell owns right now: before the
// transaction it admits each owner key through the guard as a write
// (refused keys wait for a later round) and releases the admissions after
// the commit, so a cutover's barrier waits for a round in flight.
type Settler struct {
	svc *Service
	cfg SettlerConfig
}

// NewSettler returns a settler over svc's books.
func NewSettler(svc *Service, cfg SettlerConfig) (*Settler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Every == 0 {
		cfg.Every = time.Second
	}
	if cfg.MaxOwners == 0 {
		cfg.MaxOwners = 256
	}
	if cfg.Clock == nil {
		cfg.Clock = svc.cfg.Clock
	}
	if cfg.Logger == nil {
		cfg.Logger = svc.log
	}
	return &Settler{svc: svc, cfg: cfg}, nil
}

// Settlement is one merchant's batch of a round.
type Settlement struct {
	BatchID  string `json:"batchId"`
	Merchant string `json:"merchant"`
	Amount   int64  `json:"amount"` // net; negative when refunds outweigh payments
	Legs     int    `json:"legs"`
}

// SettleReport says what a round did.
type SettleReport struct {
	Batches []Settlement `json:"batches"`
	Owners  int          `json:"owners"`  // owner keys admitted and settled
	Skipped []string     `json:"skipped"` // owner keys the guard refused
	Legs    int          `json:"legs"`
}

// Amount is the round's net settled amount.
func (r SettleReport) Amount() int64 {
	var n int64
	for _, b := range r.Batches {
		n += b.Amount
	}
	return n
}

// mpend legs are selected by an index range: "mpend;" is the first string
// after every "mpend:..." (';' follows ':').
const mpendRange = "account >= 'mpend:' AND account < 'mpend;'"

// SettleOnce runs one round.
func (s *Settler) SettleOnce(ctx context.Context) (SettleReport, error) {
	var rep SettleReport
	owners, err := s.pendingOwners(ctx)
	if err != nil || len(owners) == 0 {
		return rep, err
	}
	var admitted []string
	var release []func()
	defer func() {
		for _, f := range release {
			f()
		}
	}()
	for _, o := range owners {
		adm, err := s.cfg.Guard.Admit(ctx, o, cell.Write, 0)
		if err != nil {
			if cell.CodeOf(err) == "" {
				return rep, fmt.Errorf("paycell: settle: admit %s: %w", o, err)
			}
			rep.Skipped = append(rep.Skipped, o)
			continue
		}
		admitted = append(admitted, o)
		rec := admission.Record{Cell: s.svc.cfg.Cell, Instance: s.cfg.Instance, Key: adm.Key, Kind: adm.Kind, Epoch: adm.Epoch, Slot: adm.Slot, Method: SettleMethod, Start: s.cfg.Clock.Now()}
		if s.cfg.OnAdmit != nil {
			s.cfg.OnAdmit(rec)
		}
		release = append(release, func() {
			rec.End = s.cfg.Clock.Now()
			adm.Release()
			if s.cfg.OnRelease != nil {
				s.cfg.OnRelease(rec)
			}
		})
	}
	if len(admitted) == 0 {
		return rep, nil
	}
	for attempt := 1; ; attempt++ {
		batches, err := s.settle(ctx, admitted)
		if err == nil {
			rep.Batches, rep.Owners = batches, len(admitted)
			for _, b := range batches {
				rep.Legs += b.Legs
			}
			return rep, nil
		}
		if err := s.svc.backoff(ctx, attempt, err, "settle", len(admitted)); err != nil {
			return rep, err
		}
	}
}

func (s *Settler) pendingOwners(ctx context.Context) ([]string, error) {
	rows, err := s.svc.db.QueryContext(ctx, "SELECT DISTINCT owner FROM entries WHERE "+mpendRange+
		" AND settled_by IS NULL AND slot >= 0 ORDER BY owner LIMIT ?", s.cfg.MaxOwners)
	if err != nil {
		return nil, fmt.Errorf("paycell: settle: pending owners: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, fmt.Errorf("paycell: settle: pending owners: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// settle claims the admitted owners' unsettled merchant legs, one batch per
// merchant, and writes the settlements, in one transaction.
func (s *Settler) settle(ctx context.Context, owners []string) ([]Settlement, error) {
	svc := s.svc
	tx, err := svc.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("paycell: settle: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(owners)), ", ") + ")"
	args := make([]any, len(owners))
	for i, o := range owners {
		args[i] = o
	}
	rows, err := tx.QueryContext(ctx, "SELECT DISTINCT account FROM entries WHERE "+mpendRange+
		" AND settled_by IS NULL AND slot >= 0 AND owner IN "+in, args...)
	if err != nil {
		return nil, fmt.Errorf("paycell: settle: merchants: %w", err)
	}
	var accounts []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			rows.Close()
			return nil, fmt.Errorf("paycell: settle: merchants: %w", err)
		}
		accounts = append(accounts, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("paycell: settle: merchants: %w", err)
	}
	slices.Sort(accounts)
	now := svc.cfg.Clock.Now().UnixMilli()
	owner := CellOwner(svc.cfg.Cell)
	var out []Settlement
	for _, acct := range accounts {
		merchant := strings.TrimPrefix(acct, "mpend:")
		batch, err := svc.cfg.IDs.New(IDKindBatch, owner)
		if err != nil {
			return nil, fmt.Errorf("paycell: settle: mint batch id: %w", err)
		}
		// Claim: only legs still unsettled when the update reads them.
		claimArgs := append([]any{batch, acct}, args...)
		if _, err := tx.ExecContext(ctx, "UPDATE entries SET settled_by = ? WHERE account = ? AND settled_by IS NULL AND slot >= 0 AND owner IN "+in, claimArgs...); err != nil {
			return nil, fmt.Errorf("paycell: settle %s: claim legs: %w", merchant, err)
		}
		st := Settlement{BatchID: batch, Merchant: merchant}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM entries WHERE account = ? AND settled_by = ?", acct, batch).Scan(&st.Amount, &st.Legs); err != nil {
			return nil, fmt.Errorf("paycell: settle %s: sum legs: %w", merchant, err)
		}
		if st.Legs == 0 {
			continue // another settler claimed them first
		}
		if st.Amount != 0 {
			txnID, err := svc.cfg.IDs.New(IDKindTxn, owner)
			if err != nil {
				return nil, fmt.Errorf("paycell: settle: mint txn id: %w", err)
			}
			if err := insertTxn(ctx, tx, txnID, -1, owner, KindSettle, batch, "", now, batch,
				[]leg{{acct, -st.Amount}, {MerchantAccount(merchant), st.Amount}}); err != nil {
				return nil, err
			}
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO settlements (batch_id, cell, merchant, amount, legs, at) VALUES (?, ?, ?, ?, ?, ?)",
			batch, svc.cfg.Cell, merchant, st.Amount, st.Legs, now); err != nil {
			return nil, fmt.Errorf("paycell: settle %s: insert settlement: %w", merchant, err)
		}
		out = append(out, st)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("paycell: settle: commit: %w", err)
	}
	return out, nil
}

// Run settles every Every until ctx ends; round errors are logged, not
// fatal. It returns ctx's cause.
func (s *Settler) Run(ctx context.Context) error {
	for {
		rep, err := s.SettleOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.cfg.Logger.Error("settlement round failed", "err", err)
		case len(rep.Batches) > 0 || len(rep.Skipped) > 0:
			s.cfg.Logger.Debug("settled", "batches", len(rep.Batches), "legs", rep.Legs, "amount", rep.Amount(), "owners", rep.Owners, "skipped", len(rep.Skipped))
		}
		t := s.cfg.Clock.NewTimer(s.cfg.Every)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}
