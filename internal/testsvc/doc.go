// Package testsvc is a tiny ledger service used by the data-plane tests and
// the demo until the reference payment cell exists: gRPC (a handwritten
// ServiceDesc shaped like generated code, messages are protobuf Structs, so
// no protoc is needed) and HTTP/JSON over the same in-memory books.
//
// Methods (full gRPC names):
//
//	/cellkit.testsvc.v1.Ledger/Credit     write: {key, amount, requestId} -> {key, balance, cell, epoch}
//	/cellkit.testsvc.v1.Ledger/Balance    read:  {key} -> {key, balance, cell}
//	/cellkit.testsvc.v1.Ledger/Statement  read, server stream: {key} -> one {key, amount, requestId} per credit
//
// HTTP: POST /v1/credit/{key}?amount=N&requestId=ID, GET /v1/balance/{key}.
// Credits are idempotent by requestId: a retry returns the first result.
// The service has no guard of its own: tests wrap it with cell/grpcguard and
// cell/httpguard.
package testsvc
