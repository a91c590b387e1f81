package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/router"
)

const maxIDCount = 10000

func (a *app) newIDCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Mint and parse slot-bearing IDs (offline)",
		Long: `Mint and parse slot-bearing IDs. An ID minted for a key (an order ID for a
user) carries the key's routing hash, so it routes to the key's cell without a
lookup. These commands do not talk to etcd.`,
		Args: noSubcommand,
		RunE: showHelp,
	}
	cmd.AddCommand(a.newIDNewCmd(), a.newIDParseCmd())
	return cmd
}

func (a *app) newIDNewCmd() *cobra.Command {
	var (
		key   string
		kind  string
		count int
		slots int
	)
	cmd := &cobra.Command{
		Use:   "new --key KEY [--kind KIND] [-n COUNT]",
		Short: "Mint IDs for a key",
		Example: `  cellctl id new --key u42
  cellctl id new --key u42 --kind pay -n 3 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required: the key (user) the IDs are for")
			}
			if err := router.CheckKey(key); err != nil {
				return asUsage(err)
			}
			if _, err := router.FormatID(kind, 0, 0, 0); err != nil {
				return usagef("--kind %q: want 1-8 characters [a-z][a-z0-9]*, e.g. ord, pay, ref", kind)
			}
			if count < 1 || count > maxIDCount {
				return usagef("-n %d: want 1 to %d", count, maxIDCount)
			}
			if err := router.CheckSlotCount(slots); err != nil {
				return badSlots(slots)
			}
			out := make(idList, 0, count)
			for range count {
				id, err := router.NewID(kind, key)
				if err != nil {
					return err
				}
				info, err := router.ParseID(id)
				if err != nil {
					return err
				}
				r := newIDRow(id, info, slots)
				r.Key = key
				out = append(out, r)
			}
			return a.print(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "the key (user) the IDs are for; they route wherever it does (required)")
	f.StringVar(&kind, "kind", "ord", "the ID kind: 1-8 characters [a-z][a-z0-9]*, e.g. ord, pay, ref")
	f.IntVarP(&count, "count", "n", 1, "how many IDs to mint")
	f.IntVar(&slots, "slots", router.DefaultSlotCount, "slot count to show the slot for")
	return cmd
}

func (a *app) newIDParseCmd() *cobra.Command {
	var slots int
	cmd := &cobra.Command{
		Use:   "parse ID... [--slots N]",
		Short: "Decode IDs: kind, mint time, key hash, slot",
		Example: `  cellctl id parse ord_06GZS8NRF4QS79HB3WYRRTBSYJ0DKGD6
  cellctl id parse --slots 4096 ord_06GZS8NRF4QS79HB3WYRRTBSYJ0DKGD6`,
		Args: minArgs(1, "at least one ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := router.CheckSlotCount(slots); err != nil {
				return badSlots(slots)
			}
			out := make(idList, 0, len(args))
			var bad []error
			for _, id := range args {
				info, err := router.ParseID(id)
				if err != nil {
					bad = append(bad, err)
					continue
				}
				out = append(out, newIDRow(id, info, slots))
			}
			if len(bad) > 0 {
				return asUsage(errors.Join(bad...))
			}
			return a.print(out)
		},
	}
	cmd.Flags().IntVar(&slots, "slots", router.DefaultSlotCount, "the map's slot count, to show the slot an ID routes to")
	return cmd
}

// idRow is one ID and what it carries.
type idRow struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Time      string `json:"time"` // RFC 3339, milliseconds, UTC
	Key       string `json:"key,omitempty"`
	KeyHash   string `json:"keyHash"` // 16 hex digits
	Slot      int    `json:"slot"`
	SlotCount int    `json:"slotCount"`
}

const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

func newIDRow(id string, info router.IDInfo, slots int) idRow {
	return idRow{
		ID: id, Kind: info.Kind, Time: info.Time.UTC().Format(rfc3339Milli),
		KeyHash: fmt.Sprintf("%016x", info.KeyHash), Slot: info.Slot(slots), SlotCount: slots,
	}
}

type idList []idRow

func (l idList) writeTable(w io.Writer) error {
	withKey := len(l) > 0 && l[0].Key != ""
	if withKey {
		row(w, "ID", "KEY", "KIND", "TIME (UTC)", "KEY HASH", "SLOT")
	} else {
		row(w, "ID", "KIND", "TIME (UTC)", "KEY HASH", "SLOT")
	}
	for _, r := range l {
		slot := fmt.Sprintf("%d of %d", r.Slot, r.SlotCount)
		if withKey {
			row(w, r.ID, r.Key, r.Kind, r.Time, r.KeyHash, slot)
		} else {
			row(w, r.ID, r.Kind, r.Time, r.KeyHash, slot)
		}
	}
	return nil
}
