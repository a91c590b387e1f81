// Package cell will hold the cell model and the guard that runs inside every
// cell. NOT BUILT YET: this file only reserves the package and says what it
// is for.
//
// A cell owns slots of the keyspace, runs the whole payment chain in one IDC
// and is active, draining, fenced or offline. The guard (a gRPC interceptor
// and an HTTP middleware) admits a request only for a key this cell owns at
// its current epoch, and answers WRONG_CELL, FROZEN or FENCED otherwise.
// Each guard instance acks the highest map epoch it has applied under an
// etcd lease, and fences itself (stops admitting writes) when it cannot
// renew that lease in time, so that a cell cut off from etcd never goes on
// writing after its slots have moved.
//
// Like router and failover this is a core package: it imports no etcd,
// network or SQL package and takes time as an input; the etcd and HTTP/gRPC
// adapters live elsewhere (see deps_test.go at the module root).
package cell
