package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cellkit/cellkit/infra/etcdembed"
)

func (a *app) newDevCmd() *cobra.Command {
	var dataDir, listen, peer string
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR] [--listen HOST:PORT] [--peer HOST:PORT]",
		Short: "Run a local single-member etcd for development; its data survives restarts",
		Long: `Run a local single-member etcd for development and trying cellctl. It keeps its
data in --data-dir (default $XDG_DATA_HOME/cellkit/dev, else ~/.local/share/cellkit/dev),
so a map created today is still there after a restart. It prints how to point
other commands at it and runs until Ctrl-C (SIGINT) or SIGTERM, then stops cleanly.

Not for production: one member, no TLS, no auth.`,
		Example: `  cellctl dev
  cellctl dev --listen 127.0.0.1:12379 --peer 127.0.0.1:12380 --data-dir /tmp/cellkit-dev`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				d, err := a.defaultDataDir()
				if err != nil {
					return err
				}
				dataDir = d
			}
			srv, err := etcdembed.Start(a.ctx, etcdembed.Config{Dir: dataDir, ClientAddr: listen, PeerAddr: peer})
			if err != nil {
				if errors.Is(err, etcdembed.ErrInvalidConfig) {
					flags := strings.NewReplacer("ClientAddr", "--listen", "PeerAddr", "--peer", "Dir", "--data-dir")
					return usagef("%s", flags.Replace(strings.TrimPrefix(message(err), "invalid config: ")))
				}
				return fmt.Errorf("start etcd: %w", err)
			}
			defer srv.Close()
			if err := a.print(devResult{Endpoints: srv.Endpoints(), DataDir: dataDir}); err != nil {
				return err
			}
			<-a.ctx.Done()
			if a.output == "table" {
				fmt.Fprintln(a.stdout, "stopping etcd...")
			}
			srv.Close()
			if a.output == "table" {
				fmt.Fprintf(a.stdout, "etcd stopped; its data stays in %s\n", dataDir)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "where etcd keeps its data (default $XDG_DATA_HOME/cellkit/dev or ~/.local/share/cellkit/dev)")
	f.StringVar(&listen, "listen", "127.0.0.1:2379", "client address (host:port; port 0 picks a free one)")
	f.StringVar(&peer, "peer", "127.0.0.1:2380", "peer address (host:port; port 0 picks a free one)")
	return cmd
}

func (a *app) defaultDataDir() (string, error) {
	if d, ok := a.env("XDG_DATA_HOME"); ok && filepath.IsAbs(d) {
		return filepath.Join(d, "cellkit", "dev"), nil
	}
	home, ok := a.env("HOME")
	if !ok || home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", usagef("no home directory to keep etcd's data in (%v); give --data-dir", err)
		}
	}
	return filepath.Join(home, ".local", "share", "cellkit", "dev"), nil
}

type devResult struct {
	Endpoints []string `json:"endpoints"`
	DataDir   string   `json:"dataDir"`
}

func (r devResult) writeTable(w io.Writer) error {
	ep := r.Endpoints[0]
	fmt.Fprintf(w, "etcd is serving at %s\n", ep)
	fmt.Fprintf(w, "data dir: %s (kept across restarts)\n\n", r.DataDir)
	fmt.Fprintf(w, "Point other shells at it:\n\n  export %s=%s\n\n", envEtcd, ep)
	fmt.Fprintf(w, "Then, for example:\n\n")
	fmt.Fprintf(w, "  cellctl map init --cell a1@IDC-A --cell b1@IDC-B --reason \"first map\"\n")
	fmt.Fprintf(w, "  cellctl route u42\n\n")
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
	return nil
}
