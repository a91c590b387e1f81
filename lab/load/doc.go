// Package load is the payment load generator of the lab and the demo: a
// pool of workers that open accounts, top them up through the virtual
// bank, and then pay merchants (create an order, pay it from balance,
// sometimes refund part of it) through cellrouter's HTTP API, as a payment
// app would.
//
// Every write carries a request ID and is retried with the same ID on a
// network error, 421, 503 or 5xx until the operation's deadline: paycell is
// idempotent by request ID, so a retry never pays twice. The generator
// keeps the log the invariant checker needs — every acknowledged payment,
// refund, top-up and withdrawal with its request ID, owner and amount — and
// honest counts: operations that succeeded, were declined by the business
// (insufficient funds), or failed after every retry, and every retried
// attempt with its reason.
package load
