// Package paycell is cellkit's reference payment cell: the chain a cell
// runs for the users it owns — accounts, orders, payments, refunds, a
// bank gateway for top-ups and withdrawals — over double-entry books in
// SQL (SQLite or MariaDB/MySQL, schema in paycell/schema).
//
// # Books
//
// Money is int64 minor units. Every movement is a transaction (txns) of
// balanced legs (entries) on named accounts — user:<owner>,
// mpend:<merchant> (the merchant's cell-local pending credits),
// merchant:<merchant> (settled), bank:clearing, bank:withdrawing — written
// in ONE local transaction together with the rows it changes (accounts,
// orders, bank_ops) and the idempotency record (requests):
//
//	pay              user -a, mpend +a          refund           mpend -a, user +a
//	top-up succeeded bank:clearing -a, user +a  withdraw         user -a, bank:withdrawing +a
//	withdrawal paid  bank:withdrawing -a, bank:clearing +a
//	withdrawal failed bank:withdrawing -a, user +a
//
// Every row carries slot (router.KeySlot(owner, SlotCount)) and owner, and
// every leg its transaction's, so a data mover can move a user's money by
// slot. Order and bank operation IDs are slot-bearing IDs minted for the
// owner, so a payment or a bank callback routes to the owner's cell.
// Merchants are shared "hot" accounts: payments credit mpend:<merchant> legs
// owned by the paying user, and the Settler nets them per cell into
// settlement transactions (slot -1, owner "cell:<cell>"), never by a
// cross-cell transaction per payment. ReadBooks checks a cell's books.
//
// # Requests
//
// Writes are idempotent per (owner, requestId): a retry with the same
// parameters returns the first result (with the serving cell in Cell), a
// reused requestId with other parameters is ErrConflict. Refusals are not
// recorded: they wrote nothing, and a retry is decided afresh. A bank
// callback is idempotent by the operation's status transition. Writes of
// one owner serialize on the owner's account row (SELECT ... FOR UPDATE on
// MySQL; SQLite serializes all writes), so concurrent payments never
// overdraw. Opening an account on MySQL is an upsert that changes nothing,
// so concurrent openers take the new row's exclusive lock at once instead
// of deadlocking on a shared lock's upgrade.
//
// # Edges
//
// Service.HTTPHandler serves the HTTP/JSON API (key = owner, orderId or
// opId from the path; cellrouter routes with GatewayRoutes):
//
//	POST /v1/users/{owner}/open        {requestId}                  → {owner, balance, cell}
//	GET  /v1/users/{owner}/balance                                  → {owner, balance, cell}
//	GET  /v1/users/{owner}/statement?limit=N                        → {owner, balance, entries, cell}
//	POST /v1/users/{owner}/orders      {requestId, merchant, amount} → {orderId, owner, merchant, amount, refunded, status, cell}
//	GET  /v1/orders/{orderId}                                       → the order
//	POST /v1/orders/{orderId}/pay      {requestId}                  → {orderId, txnId, status, balance, cell}
//	POST /v1/orders/{orderId}/refund   {requestId, amount}          → {orderId, txnId, refunded, status, balance, cell}
//	POST /v1/users/{owner}/topups      {requestId, amount}          → {opId, status: "pending", cell}
//	POST /v1/users/{owner}/withdrawals {requestId, amount}          → {opId, status: "pending", balance, cell}
//	POST /v1/bank/callbacks/{opId}     {status, bankRef}            → {opId, status, cell}
//
// Errors are {"error", "code", "cell"}: 400 BAD_REQUEST, 402
// INSUFFICIENT_FUNDS, 404 NOT_FOUND, 409 CONFLICT (503 UNAVAILABLE, 500
// INTERNAL); guard refusals (421 WRONG_CELL, 503 FROZEN, ...) come from the
// guard. Service.RegisterGRPC serves the same operations as the gRPC
// service cellkit.paycell.v1.PayCell with google.protobuf.Struct messages.
// HTTPGuardConfig and GRPCGuardConfig declare each route's and method's
// kind and key for cell/httpguard and cell/grpcguard; Client calls the
// HTTP API. Codes map to HTTP and gRPC statuses in one place (Code).
//
// paycell/cellsrv runs a whole instance (books, guard, servers, settler);
// paycell/bank is the virtual bank channel.
package paycell
