// Package client is the cell-aware SDK: it sends every call to the cell that
// owns its key, and handles what the cell's guard says when the SDK's map is
// behind.
//
// For gRPC, a Client provides a resolver for targets "cellkit:///<service>"
// (every instance from a router.Discovery, tagged with its cell), a
// balancer whose picker chooses a READY connection of the owner cell,
// round-robin within the cell, and interceptors. Apps keep their generated
// stubs; each call's context names its routing key:
//
//	src := client.NewContactSource(store, client.ContactConfig{}) // store: *etcdstore.Store
//	w := router.NewWatcher(src, router.WatcherConfig{})
//	if err := w.Start(ctx); err != nil { ... }
//	defer w.Close()
//	cfg := client.DefaultConfig(w, discovery) // discovery: a router.Discovery
//	cfg.Contact = src                         // so the client can tell a stale map
//	cfg.IsWrite = func(m string) bool { return m == "/ledger.v1.Ledger/Credit" }
//	c, err := client.New(cfg, prometheus.DefaultRegisterer)
//	cc, err := c.Dial("ledger") // grpc.NewClient("cellkit:///ledger", c.DialOptions()...)
//	ledger := ledgerpb.NewLedgerClient(cc)
//	ctx = client.WithKey(ctx, userID)
//	ctx = client.WithIdempotencyKey(ctx, requestID) // writes; minted if absent
//	resp, err := ledger.Credit(ctx, req)
//
// What the SDK guarantees and what it does not:
//
//   - A call without a key fails with ErrNoKey (InvalidArgument); it is
//     never sent to "any cell".
//   - A call goes only to the owner in the SDK's table. If the owner has
//     no READY connection the pick waits, within the deadline; if every
//     connection of the owner is failing, a fail-fast call fails
//     Unavailable. Another cell is never tried as a fallback.
//   - Every attempt carries cellkit-key, cellkit-epoch (of the table the
//     route came from) and, for writes, cellkit-idempotency-key; retries
//     of a call reuse it, so a service that deduplicates by it applies a
//     retried write once.
//   - Guard refusals (decoded by cell/wire) are retried as RetryPolicy
//     says: WRONG_CELL once on the new owner after the SDK's map reaches
//     the refusal's epoch (or, if it does not within RedirectWait, on the
//     owner the refusal names); FROZEN after the flip, within the deadline
//     and FrozenWait, else a *FrozenWaitError; STALE_MAP once after a short
//     pause. A write for a key the SDK's own table shows frozen waits for the flip
//     before it is sent at all.
//   - Each cell has a circuit breaker (gobreaker): Unavailable and
//     DeadlineExceeded count as failures, refusals do not; an open breaker
//     fails calls fast with a *CellUnavailableError.
//   - The map is bounded-stale: with a ContactReporter the client reports
//     (Stale, metric cellkit_client_map_stale) when its source has been
//     silent for longer than MaxStaleness, and keeps routing on its last
//     good table; the guards refuse what that table gets wrong.
//
// ExampleClient_Dial runs the dial end to end. Transport does the same for
// HTTP services:
//
//	hc := &http.Client{Transport: &client.Transport{Client: c, Key: userFromPath}}
//
// The metrics (requests by cell
// and outcome, redirects, frozen waits and their duration, breaker state,
// map epoch, staleness) are registered with the Registerer given to New.
package client
