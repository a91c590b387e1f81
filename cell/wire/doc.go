// Package wire is the one place where guard refusals become protocol: gRPC
// status codes with details, HTTP statuses with headers, and back again. The
// guard adapters, the SDK and cellrouter all use it, so a refusal means the
// same thing on every path.
//
// Metadata and headers (HTTP header names are the canonical forms of these):
//
//	cellkit-key              the routing key (stamped by SDK and router; clients' own are stripped)
//	cellkit-epoch            the map epoch the caller routed with
//	cellkit-idempotency-key  request ID that makes a retried write safe
//	cellkit-code             on refusals: WRONG_CELL, FROZEN, FENCED, STALE_MAP, NO_KEY
//	cellkit-owner, cellkit-owner-idc, cellkit-cell   on WRONG_CELL: who owns it; who refused
//
// gRPC: WRONG_CELL is FailedPrecondition, FROZEN, FENCED and STALE_MAP are
// Unavailable, NO_KEY is InvalidArgument; each carries an ErrorInfo
// (domain "cellkit.io", reason = code, metadata owner/ownerIdc/cell/epoch/
// slot/cutover) and, when retryable, a RetryInfo.
//
// HTTP: WRONG_CELL is 421 Misdirected Request; FROZEN, FENCED and STALE_MAP
// are 503 with Retry-After; NO_KEY is 400. The body is a JSON Problem.
package wire
