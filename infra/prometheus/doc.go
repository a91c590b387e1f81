// Package prometheus is a cutover gate (failover.Gate) backed by a
// Prometheus server: during a stage's bake it evaluates one PromQL query
// over the HTTP API (GET /api/v1/query) and compares every sample of the
// result with a threshold.
//
//	cfg, err := prometheus.ParseSpec("sum(rate(http_errors_total[1m])) < 0.01")
//	cfg.URL = "http://prometheus.monitoring:9090"
//	cfg.PassOnEmpty = true // no error series at all means no errors
//	gate, err := prometheus.NewGate(cfg)
//	runner := failover.Runner{Gates: []failover.Gate{gate}, ...}
//
// A check passes only when the query returns an instant vector or a scalar
// and every sample satisfies `sample Op Threshold`. The result's Value is
// the worst sample (the one closest to breaking the threshold, or furthest
// past it) and Detail reads like
//
//	sum(rate(http_errors_total[1m])) = 0.031 > 0.01 (threshold)
//
// The gate fails closed: a server that cannot be reached or does not answer
// within Config.Timeout, an error answer (a bad query, an evaluation
// timeout), a response that is not Prometheus JSON, a range vector or a
// string result, and a NaN sample all fail the check, and Detail says why.
// An empty result fails too unless Config.PassOnEmpty is set.
//
// The query is evaluated at the server's current time; it does not look at
// GateInput.Since, so keep range windows ([1m]) short against the bake time
// if the gate should judge mostly what came after the flip.
//
// The package uses plain net/http and encoding/json, not a Prometheus
// client library. Tests run a real Prometheus server (Debian's
// `prometheus` package; scripts/tools/prometheus.sh installs it).
package prometheus
