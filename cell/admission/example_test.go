package admission_test

import (
	"fmt"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
)

// Records from two cells' guards: the key moved from a1 to b1 after a1's
// write ended, then a1 admitted it again while b1 was still writing.
func ExampleConflicts() {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	var log admission.Log
	for _, r := range []admission.Record{
		{Cell: "a1", Key: "u42", Kind: cell.Write, Epoch: 1, Start: at(0), End: at(10)},
		{Cell: "b1", Key: "u42", Kind: cell.Write, Epoch: 3, Start: at(20), End: at(30)},
		{Cell: "a1", Key: "u42", Kind: cell.Write, Epoch: 5, Start: at(25), End: at(35)},
	} {
		log.Admitted(r)
		log.Released(r)
	}
	for _, c := range log.Conflicts() {
		fmt.Printf("%s: %s@%d and %s@%d overlap\n", c.A.Key, c.A.Cell, c.A.Epoch, c.B.Cell, c.B.Epoch)
	}
	// Output: u42: b1@3 and a1@5 overlap
}
