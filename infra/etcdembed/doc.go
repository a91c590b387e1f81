// Package etcdembed runs an embedded etcd server (one member, or a cluster of
// three for drills: StartCluster) inside the process, for
// `cellctl dev`, the demo and tests. Production clusters run etcd on its
// own, spanning three sites.
//
// Start picks free loopback ports unless told otherwise, waits until the
// member serves, and keeps etcd's own logging down to real errors on
// stderr. Endpoints gives the URLs for go.etcd.io/etcd/client/v3.
//
// The data directory is persistent: starting again on a directory that
// already holds a member restarts that member from its write-ahead log and
// keeps its data. Restart stops and starts the member on the same directory
// and the same addresses, so clients keep their endpoints and watches
// resume; tests use it to show that watchers survive an etcd restart. When
// the member stops, client streams (watches, lease keep-alives) are ended
// with codes.Unavailable at once, so that clients reconnect rather than give
// up, and so that stopping does not wait etcd's request timeout (7s) for
// them.
//
// Errors name what went wrong: *DataDirError for a directory that cannot be
// created or written, *ListenError for an address that cannot be bound
// (errors.Is(err, syscall.EADDRINUSE) when it is taken), ErrInvalidConfig
// from Config.Validate, ErrStartTimeout and ErrClosed.
package etcdembed
