// Package bank is a virtual bank channel for paycell: it takes top-ups and
// withdrawals (an operation ID, a kind, an amount), decides each after a
// configurable delay — succeeded, or failed at a configurable rate,
// deterministically from a seed and the operation's ID — and delivers the
// outcome asynchronously as an HTTP callback,
//
//	POST {CallbackURL}/v1/bank/callbacks/{opId}   {"status": "succeeded"|"failed", "bankRef": "..."}
//
// normally to the cellrouter, which sends it to whichever cell owns the
// operation's key (operation IDs are slot-bearing, minted for the user).
// Delivery retries with exponential backoff and jitter on network errors,
// 421, 408, 429, 503 and every 5xx, until a 200 (delivered) or another 4xx
// (rejected), within MaxAttempts and MaxElapsed (then dropped). A rejected
// or dropped callback is logged as an error and counted in Totals, never
// silently lost; submitting the operation again, or Redeliver, restarts it.
//
// The bank keeps its own books: every operation with its outcome and
// delivery state (Ops), and the money it confirmed (Totals: deposits and
// payouts decided, and those delivered). Across all cells, once the bank
// is Quiet, the cells' net bank:clearing must equal minus the delivered
// deposits plus the delivered payouts: money is conserved.
//
// A Bank runs in-process (the demo hands it to every cell as their
// paycell.BankChannel) or behind Handler as an HTTP server, which cells in
// other processes reach with Client (`paycell bank` in cmd/paycell).
package bank
