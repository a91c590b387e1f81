package drill_test

import (
	"errors"
	"fmt"

	"github.com/cellkit/cellkit/chaos/drill"
)

func ExampleParse() {
	s, err := drill.Parse("kill-idc-a.yaml", []byte(`
name: kill-idc-a
description: Kill IDC-A under load and fail over to IDC-B.
lab: {db: mariadb}
steps:
  - load: {workers: 16}
  - wait: 3s
  - inject: {kind: kill, target: idc:IDC-A}
  - wait: {until: detected}
  - failover: {from: IDC-A, to: IDC-B}
  - stopLoad:
  - heal: all
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Lab.DB, s.Lab.Replication, s.Lab.LeaseTTL, s.Lab.SlotCount)
	for _, st := range s.Steps {
		fmt.Printf("%-9s %s\n", st.Kind(), st.Label())
	}
	e := s.Expect.WithDefaults()
	fmt.Println("max lost:", *e.MaxLost)
	// Output:
	// mariadb semi-sync 2s 256
	// load      load 16 workers
	// wait      wait 3s
	// inject    inject kill idc:IDC-A
	// wait      wait until detected
	// failover  failover IDC-A -> IDC-B
	// stopLoad  stop load
	// heal      heal all
	// max lost: 0
}

func ExampleScenarioError() {
	_, err := drill.Parse("latency.yaml", []byte(`
name: latency
description: Slow IDC-A down.
steps:
  - inject: {kind: latency, target: idc:IDC-A, lantency: 200ms}
`))
	var se *drill.ScenarioError
	if errors.As(err, &se) {
		fmt.Println(se.Step, se.Field)
	}
	fmt.Println(errors.Is(err, drill.ErrBadScenario))
	fmt.Println(err)
	// Output:
	// 0 inject.lantency
	// true
	// latency.yaml: step 1 (inject): unknown field "lantency" (did you mean "latency"?)
}
