// Package gateway is cellrouter's engine: an HTTP reverse proxy and a
// transparent gRPC proxy in one process, each sending a request to an
// instance of the cell that owns the request's key in the current shard map.
//
// EXPERIMENTAL: the configuration and the metrics may still change.
//
// # Routing
//
// The key of an HTTP request comes from the first of its route's sources
// that yields one: a header, a query parameter, a cookie or a path segment
// (Route, KeySource; the route is chosen by the longest path prefix). The
// key of a gRPC call comes from metadata, by default x-route-key, with
// per-method overrides (GRPCConfig): other metadata keys, or a string field
// of the request message named by its field number ("1", or "3.1" through a
// nested message), read from the wire format without the schema. No key:
// 400 / InvalidArgument with the code NO_KEY and a message naming where the
// router looked.
//
// The router strips every cellkit-* header and metadata key the client sent
// (except cellkit-idempotency-key, which is the client's request ID) and
// stamps its own cellkit-key and cellkit-epoch, so a client can neither
// choose a cell nor claim an epoch. Instances come from a router.Discovery,
// round-robin within the owner cell. gRPC calls are forwarded as raw frames
// (a grpc.Server with an UnknownServiceHandler and a pass-through codec),
// so any service, unary or streaming, goes through without generated code.
//
// # Frozen keys
//
// A request whose key is frozen (a cutover is moving its slot) is held
// until the router's map flips it, then sent to the new owner; the client
// sees a pause, not an error. Held requests are bounded per slot and in all
// (BufferConfig) and in time; past a bound the router answers 503 with
// Retry-After and the code FROZEN (gRPC: Unavailable with ErrorInfo FROZEN
// and RetryInfo). A held HTTP request's body is not read while it is held:
// it stays in the client's connection (TCP and HTTP/2 flow control bound
// it), so holding costs no memory beyond the request's headers. The same
// goes for a held gRPC call's messages, except the first one of a method
// keyed by a message field, which must be read to find the key.
//
// # Refusals and the one retry
//
// A guard that refuses a request (WRONG_CELL, FROZEN, STALE_MAP) has not run
// it, so the router may send it again: it waits (RedirectWait) for its map
// to reach the epoch the guard decided with, routes again (holding the
// request if its key is now frozen) and retries once. If its map does not
// get there in time, a WRONG_CELL is retried on the owner the guard named,
// stamped with the guard's epoch (that owner's guard checks it again).
// Only replayable requests are retried:
//   - HTTP: bodies up to HTTPConfig.MaxReplayBody are read into memory
//     before forwarding (after any hold); larger bodies stream through and
//     a refusal is passed on to the client.
//   - gRPC: the request messages of a call are kept while they stay within
//     GRPCConfig.MaxReplayMessages/MaxReplayBytes, and the call is retried
//     only if nothing (no header, no message) has reached the client yet.
//     Guards refuse with a trailers-only answer, so unary and
//     server-streaming calls always qualify; a long client or bidi stream
//     that outgrew the bounds, or has started answering, does not, since
//     replaying it would show the client a second conversation.
//
// # Serving HTTP
//
// Plain HTTP/1.1 requests (no Upgrade, Expect or Transfer-Encoding, a body
// of at most 64 KiB) are served on the gateway's own connection loop and
// sent upstream on pooled keep-alive connections by the handler's own
// goroutine; a connection whose request is anything else is handed, with
// the bytes already read, to net/http's server and ReverseProxy, which
// serve it from then on. This doubles throughput over net/http alone (see
// docs/benchmarks.md); HTTPConfig.StdServer turns it off. The common request
// and response heads are read by a parser stricter than net/http's (what it
// accepts, net/http reads the same way; FuzzHeadParser checks it), the rest
// by net/http. Heads whose framing could be read two ways are refused with
// 400 and the connection closed: Content-Length with Transfer-Encoding,
// several or malformed Content-Lengths, folded lines, no Host or two. One difference:
// on the plain path a client that hangs up while its request is held for a
// frozen slot keeps its place until the flip or the buffer timeout.
//
// # Operations
//
// Serve runs the HTTP, gRPC and admin listeners and drains gracefully when
// its context ends. The admin handler serves /healthz, /readyz (a map is
// loaded and every cell owning keys has instances) and /metrics
// (cellrouter_* metrics on the registry passed in Options).
//
// Example:
//
//	gw, err := gateway.New(gateway.DefaultConfig(), gateway.Options{
//		Source:    store,     // *etcdstore.Store
//		Discovery: discovery, // a router.Discovery
//		Registry:  prometheus.NewRegistry(),
//		Logger:    slog.Default(),
//	})
//	if err != nil { ... }
//	if err := gw.Start(ctx); err != nil { ... } // loads the map
//	defer gw.Close()
//	err = gw.Serve(ctx, gateway.Listeners{HTTP: lh, GRPC: lg, Admin: la})
package gateway
