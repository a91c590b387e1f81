// Command cellctl is the cellkit operator CLI: it runs a local etcd (dev),
// creates, shows, validates and diffs the shard map, manages cells and the
// whitelist, routes keys, mints and parses slot-bearing IDs, and gives the
// one-command tour (demo). Every change needs --reason and is recorded with
// the actor in the audit log. docs/cli.md lists every command and the exit
// codes, which are decided in one place (exitcode.go).
//
//	cellctl dev
//	cellctl map init --cell a1@IDC-A --cell b1@IDC-B --reason "first map"
//	cellctl route u42 -o json
package main
