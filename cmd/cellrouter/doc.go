// Command cellrouter is cellkit's gateway: an HTTP reverse proxy and a
// transparent gRPC proxy in one process that send every request to an
// instance of the cell owning its key in the shard map (router/gateway does
// the work; this command wires etcd, discovery, metrics, logs and signals).
//
// It reads a YAML file (--config) and flags that override it:
//
//	listen: {http: ":8080", grpc: ":8081", admin: ":9090", pprof: false}
//	etcd: {endpoints: ["http://127.0.0.1:2379"], dialTimeout: 5s}
//	cluster: prod
//	discovery: {mode: etcd}          # etcd | static | map
//	log: {level: info, format: json}
//	http:
//	  idleTimeout: 2m                # a keep-alive connection with no request
//	  readHeaderTimeout: 10s         # a request's head (and small body) once it started
//	  routes:
//	    - prefix: /v1/
//	      keys: [{header: X-User-Id}, {path: "/v1/*/{key}"}]
//	grpc:
//	  metadata: [x-user-id]
//	  methods:
//	    - {method: /pay.v1.Payments/, field: "1"}   # key = field 1 of the request
//	buffer: {maxPerSlot: 256, maxTotal: 4096, timeout: 2s, retryAfter: 1s}
//	redirectWait: 1s
//	drainTimeout: 15s
//
// The admin address serves /healthz, /readyz and /metrics, and Go's
// profiler under /debug/pprof/ when listen.pprof (--pprof) is set.
//
// Discovery: "etcd" follows the endpoints/<cell>/<instance> records that
// cell instances register under their leases (infra/etcdcell); "static"
// uses discovery.static; "map" uses the endpoints the map gives each cell.
//
// Run it against `cellctl dev`:
//
//	cellrouter --etcd http://127.0.0.1:2379 --discovery map --log-format text
//
// SIGTERM or SIGINT drains (readiness 503, listeners closed, requests in
// flight finished within drainTimeout) and exits 0. Exit codes: 0 drained,
// 1 runtime error, 2 usage or configuration error.
package main
