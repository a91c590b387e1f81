// Command paycell runs one instance of cellkit's reference payment cell
// (package paycell): accounts, orders, payments, refunds, top-ups and
// withdrawals over double-entry SQL books (SQLite or MariaDB/MySQL), served
// over HTTP/JSON and gRPC behind the cell guard, registered in etcd so that
// cellrouter finds it and cutovers wait for it.
//
//	paycell --cluster demo --cell a1 --etcd http://127.0.0.1:2379 \
//	    --db sqlite:/var/lib/paycell/a1.db --http 127.0.0.1:8101 \
//	    --bank-url http://127.0.0.1:8080      # callbacks through cellrouter
//
// `paycell bank --callback-url URL` serves the virtual bank on its own, for
// cells started with --bank-submit-url.
//
// The slot count is read from the cluster's map. SIGTERM or SIGINT stops
// gracefully: the settler stops, requests in flight finish (--drain-timeout),
// the instance's lease is revoked, the books close. Exit codes: 0 stopped,
// 1 runtime error, 2 usage error.
package main
