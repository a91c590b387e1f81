// Package books checks the invariants of a payment platform's books after a
// run: it reads every cell's database (paycell's schema), the map, the load
// generator's log of acknowledged writes, the virtual bank's own books and
// the guards' admission records, and reports each invariant with pass or
// fail and the first violations:
//
//   - every acknowledged payment exists exactly once, in the database of
//     the cell that owns its user (and nowhere else, unless the databases
//     replicate to each other);
//   - no order was paid twice;
//   - the ledger balances: every transaction's legs sum to zero, and every
//     account's balance is the sum of its user's legs;
//   - money is conserved: what the bank took in minus what it paid out is
//     exactly what the books hold (user balances, merchants' pending and
//     settled money, withdrawals in flight);
//   - no slot was written by two cells at once (from the guards' records);
//   - no rows are left at a cell that does not own them.
package books
