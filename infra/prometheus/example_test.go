package prometheus_test

import (
	"fmt"

	"github.com/cellkit/cellkit/infra/prometheus"
)

func ExampleParseSpec() {
	// PromQL's own comparisons stay in the query: the spec splits on the
	// rightmost operator followed by a number.
	cfg, err := prometheus.ParseSpec(`sum(rate(http_requests_total{code=~"5.."}[1m])) > 0 < 0.5`)
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg.URL = "http://prometheus.monitoring:9090"
	cfg.PassOnEmpty = true // no 5xx series at all: no errors
	gate, err := prometheus.NewGate(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("query: %s\nop: %s\nthreshold: %g\nname: %s\n", cfg.Query, cfg.Op, cfg.Threshold, gate.Name())

	_, err = prometheus.ParseSpec("up > bool 1")
	fmt.Println(err)
	// Output:
	// query: sum(rate(http_requests_total{code=~"5.."}[1m])) > 0
	// op: <
	// threshold: 0.5
	// name: sum(rate(http_requests_total{code=~"5.."}[1m])) > 0 < 0.5
	// prometheus: gate spec "up > bool 1": after the last operator ">": threshold "bool 1" is not a number; want "<query> <op> <number>"
}
