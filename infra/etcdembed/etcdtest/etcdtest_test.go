package etcdtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
)

var shared etcdtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goroutine leak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func TestStartClientStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := etcdtest.Client(t, etcdtest.Start(t))
	st := etcdtest.Store(t, cli, "test")
	tb, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 256))
	if err != nil {
		t.Fatal(err)
	}
	if tb.Epoch() != 1 || tb.SlotCount() != 256 {
		t.Fatalf("created epoch %d, %d slots", tb.Epoch(), tb.SlotCount())
	}
	for slot, want := range map[int]string{0: "a1", 127: "a1", 128: "b1", 255: "b1"} {
		if got := tb.SlotOwner(slot); got != want {
			t.Errorf("slot %d owned by %q, want %s", slot, got, want)
		}
	}
	h, err := st.History(ctx, 0)
	if err != nil || len(h) != 1 || h[0].Who != etcdtest.Actor {
		t.Fatalf("history %+v, %v: want one record by %s", h, err, etcdtest.Actor)
	}
}

func TestSharedStartsOnce(t *testing.T) {
	a, b := shared.Client(t), shared.Client(t)
	if a != b {
		t.Fatal("Shared.Client returned two clients")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Put(ctx, "/etcdtest/k", "v"); err != nil {
		t.Fatal(err)
	}
}
