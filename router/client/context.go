package client

import (
	"context"

	"github.com/cellkit/cellkit/router"
)

type keyCtx struct{}

type idemCtx struct{}

// WithKey returns a context whose calls route by key: a user ID, or an ID
// minted for that user (router.NewID). Every call made through the SDK needs
// one; an empty key counts as none.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// KeyFrom returns the routing key set by WithKey.
func KeyFrom(ctx context.Context) (string, bool) {
	k, _ := ctx.Value(keyCtx{}).(string)
	return k, k != ""
}

// WithIdempotencyKey returns a context whose calls carry id as their
// idempotency key (metadata and header cellkit-idempotency-key). Every
// attempt of a call, including the SDK's retries, carries the same id, so a
// service that deduplicates by it applies a retried write once. Mint ids
// with NewIdempotencyKey.
func WithIdempotencyKey(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, idemCtx{}, id)
}

// IdempotencyKeyFrom returns the idempotency key set by WithIdempotencyKey.
func IdempotencyKeyFrom(ctx context.Context) (string, bool) {
	id, _ := ctx.Value(idemCtx{}).(string)
	return id, id != ""
}

// IdempotencyKind is the ID kind of idempotency keys minted by
// NewIdempotencyKey.
const IdempotencyKind = "req"

// NewIdempotencyKey mints a fresh idempotency key for a request about key:
// a slot-bearing ID of kind "req" (router.NewID), so it routes with key and
// is unique without coordination. It fails only for an invalid key.
func NewIdempotencyKey(key string) (string, error) {
	return router.NewID(IdempotencyKind, key)
}
