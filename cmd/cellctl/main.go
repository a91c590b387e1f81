// Command cellctl is the operator CLI of cellkit: it creates, shows, checks
// and changes the shard map in etcd, routes keys, mints and parses IDs, runs
// a local etcd for development, and gives a one-command tour (cellctl demo).
//
// See docs/cli.md for a tour of every command and the exit codes.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is cellctl with the process environment; SIGINT and SIGTERM cancel
// the running command, which then cleans up and exits.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, let a second one kill a shutdown that hangs.
	go func() { <-ctx.Done(); stop() }()
	return runContext(ctx, args, os.LookupEnv, stdin, stdout, stderr)
}
