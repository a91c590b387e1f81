// Package admission is what the guard adapters (cell/grpcguard,
// cell/httpguard) report about each request: a Decision for every request
// they guard, and a Record for every request admitted, from the guard's yes
// to the end of its handler. Records are the evidence for the single-writer
// promise: Log collects them and Conflicts finds any key that two cells
// write-admitted at overlapping times.
//
// It is a pure package: no network, no clock of its own.
//
//	var log admission.Log
//	icpt, _ := grpcguard.New(guard, grpcguard.Config{OnAdmit: log.Admitted, OnRelease: log.Released})
//	// ... run load, move slots ...
//	if c := log.Conflicts(); len(c) > 0 {
//		t.Fatalf("two writers: %v", c[0])
//	}
package admission
