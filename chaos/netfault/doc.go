// Package netfault puts TCP fault proxies (github.com/Shopify/toxiproxy/v2,
// in-process) on the network paths a drill wires through it: cell↔etcd,
// cell↔database, router↔cell, the replication link between IDCs, the
// controller's links. A path is wired once, at start, to dial the proxy's
// address instead of the upstream; faults are then switched on and off
// without the endpoints noticing anything but the network:
//
//   - Latency adds delay (and jitter) in both directions.
//   - Blackhole is a partition: connections stay open, nothing passes
//     either way (a dead link, not a refused one); healing closes the
//     connections that were cut, as a real partition's TCP timeouts would.
//   - Bandwidth limits each direction to a rate.
//   - Reset resets every connection and refuses new ones (a crashed peer,
//     a firewall answering RST).
//
// Heal removes every fault of a proxy; a Net heals or closes all of them.
//
//	n := netfault.New(logger)
//	p, _ := n.Proxy("etcd-from-IDC-A", "127.0.0.1:2379")
//	// dial p.Addr() instead of 127.0.0.1:2379 ...
//	p.Blackhole()
//	p.Heal()
package netfault
