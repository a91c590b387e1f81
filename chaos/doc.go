// Package chaos will run drills. NOT BUILT YET: this file only reserves the
// package and says what it is for.
//
// It will inject faults (gRPC and HTTP interceptors, a TCP proxy, process
// kills, network partitions), run scripted drill scenarios (load, faults, a
// cutover or failover), check invariants afterwards (above all: no two cells
// accepted a write for the same user, no acknowledged payment was lost) and
// write a report. Active injections are recorded in etcd under
// /cellkit/<cluster>/chaos/.
package chaos
