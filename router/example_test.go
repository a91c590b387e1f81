package router_test

import (
	"fmt"

	"github.com/cellkit/cellkit/router"
)

func Example() {
	t, _ := router.NewTable(1024)
	_ = t.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	_ = t.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"})
	_ = t.Assign(router.SlotRange{First: 0, Last: 511}, "a1")
	_ = t.Assign(router.SlotRange{First: 512, Last: 1023}, "b1")
	if err := t.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	before := t.Clone().Seal()

	_ = t.SetWhitelist("u42", "b1") // a canary user goes first
	t.SetEpoch(1)
	t.Seal()

	order, _ := router.NewID("ord", "u42")
	for _, key := range []string{"u42", order} {
		r := t.Lookup(key)
		fmt.Printf("slot %d -> %s (whitelisted %v)\n", r.Slot, r.Cell.ID, r.Whitelisted)
	}
	fmt.Println(router.Compare(before, t).Lines())
	// Output:
	// slot 449 -> b1 (whitelisted true)
	// slot 449 -> b1 (whitelisted true)
	// [whitelist "u42" -> b1]
}
