package etcdstore

import (
	"fmt"
	"regexp"
)

// DefaultCluster is the cluster name used when none is given.
const DefaultCluster = "default"

var clusterRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckCluster reports whether name can be used as a cluster name.
func CheckCluster(name string) error {
	if !clusterRe.MatchString(name) {
		return fmt.Errorf("etcdstore: cluster name %q (want 1-63 of a-z 0-9 -, starting and ending alphanumeric): %w", name, ErrBadConfig)
	}
	return nil
}

// Keys names the etcd keys of one cluster.
type Keys struct{ Prefix string }

// KeysFor returns the key layout of cluster (which must pass CheckCluster).
func KeysFor(cluster string) Keys { return Keys{Prefix: "/cellkit/" + cluster + "/"} }

// Map is the key of the current table.
func (k Keys) Map() string { return k.Prefix + "map" }

// AuditPrefix is the prefix of all audit records.
func (k Keys) AuditPrefix() string { return k.Prefix + "audit/" }

// Audit is the key of the audit record of the change that produced epoch.
func (k Keys) Audit(epoch uint64) string { return fmt.Sprintf("%s%020d", k.AuditPrefix(), epoch) }

// AcksPrefix is the prefix of every guard instance's ack.
func (k Keys) AcksPrefix() string { return k.Prefix + "acks/" }

// Ack is the key of one guard instance's ack: the highest map epoch it has
// applied, bound to the instance's lease.
func (k Keys) Ack(cell, instance string) string { return k.AcksPrefix() + cell + "/" + instance }

// EndpointsPrefix is the prefix of every cell instance's endpoint record.
func (k Keys) EndpointsPrefix() string { return k.Prefix + "endpoints/" }

// Endpoint is the key of one cell instance's addresses, bound to the
// instance's lease (the embedded-default discovery).
func (k Keys) Endpoint(cell, instance string) string {
	return k.EndpointsPrefix() + cell + "/" + instance
}
