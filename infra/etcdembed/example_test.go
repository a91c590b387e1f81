package etcdembed_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellkit/cellkit/infra/etcdembed"
)

func Example() {
	dir, err := os.MkdirTemp("", "etcdembed-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig(dir))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	if _, err := cli.Put(ctx, "/cellkit/dev/map", `{"epoch":1}`); err != nil {
		log.Fatal(err)
	}
	// The data and the endpoint survive a restart.
	if err := srv.Restart(ctx); err != nil {
		log.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/cellkit/dev/map")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.Kvs[0].Value)
	// Output: {"epoch":1}
}
