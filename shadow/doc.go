// Package shadow will carry shadow traffic: marked test requests for
// full-link load tests on the production chain. NOT BUILT YET: this file
// only reserves the package and says what it is for.
//
// It will propagate the shadow marker across HTTP and gRPC hops, resolve
// shadow tables and databases so that marked requests never touch real data
// (failing closed when no shadow target is known), provide a virtual bank
// that settles shadow payments, and generate and mirror load.
package shadow
