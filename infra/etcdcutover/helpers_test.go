package etcdcutover_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdembed"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

const (
	cluster     = "test"
	testTimeout = 60 * time.Second
	slots       = 1024
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dial connects to endpoints that are not the lab server itself (proxies).
func dial(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	must(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// fourCells: a1 (0-255), a2 (256-511) in IDC-A; b1 (512-767), b2
// (768-1023) in IDC-B; canaries whitelisted to a1.
func fourCells(t *testing.T, canaries ...string) *router.Table {
	t.Helper()
	tb, err := router.NewTable(slots)
	must(t, err)
	for i, c := range []router.Cell{{ID: "a1", IDC: "IDC-A"}, {ID: "a2", IDC: "IDC-A"}, {ID: "b1", IDC: "IDC-B"}, {ID: "b2", IDC: "IDC-B"}} {
		c.State = router.StateActive
		must(t, tb.AddCell(c))
		must(t, tb.Assign(router.SlotRange{First: i * slots / 4, Last: (i+1)*slots/4 - 1}, c.ID))
	}
	for _, k := range canaries {
		must(t, tb.SetWhitelist(k, "a1"))
	}
	must(t, tb.Validate())
	return tb.Seal()
}

// lab is an etcd, the map, one guarded ledger instance per cell, and an
// SDK client that routes by the map.
type lab struct {
	t     *testing.T
	srv   *etcdembed.Server
	cli   *clientv3.Client
	store *etcdstore.Store
	log   admission.Log
	cells map[string]*ledgerCell
	sdk   *client.Client
	ledgr *testsvc.Client
	orig  *router.Table
	// work is the service time of a credit: a few are slow, so that writes
	// are in flight across every map change (without them a missing
	// barrier goes unnoticed: the freeze-to-flip gap alone outlasts quick
	// writes).
	work func() time.Duration
}

type ledgerCell struct {
	id      string
	direct  *testsvc.Client // bypasses the SDK: only the guard decides
	inst    *etcdcell.Instance
	stop    func()
	stopped atomic.Bool
	release chan struct{}
	once    sync.Once
	held    chan struct{}
}

func (c *ledgerCell) Release() { c.once.Do(func() { close(c.release) }) }

// Stop stops serving and closes the instance (its ack leaves etcd).
func (c *ledgerCell) Stop() {
	if c.stopped.CompareAndSwap(false, true) {
		c.stop()
	}
}

// labConfig varies a lab.
type labConfig struct {
	// edit adjusts each cell's instance configuration.
	edit func(cellID string, cfg *etcdcell.Config)
	// etcd, if set, returns the etcd endpoint a cell's instance dials
	// (a proxy, to partition it); default the server itself.
	etcd func(cellID string, upstream string) string
}

func newLab(t *testing.T, tb *router.Table, cfg labConfig) *lab {
	t.Helper()
	srv := etcdtest.Start(t)
	l := &lab{t: t, srv: srv, cli: etcdtest.Client(t, srv), cells: map[string]*ledgerCell{}, orig: tb, work: slowWrites}
	l.store = etcdtest.Store(t, l.cli, cluster)
	_, err := l.store.Create(ctxT(t), "test map", tb)
	must(t, err)
	for _, c := range tb.Cells() {
		cli := l.cli
		if cfg.etcd != nil {
			cli = dial(t, []string{cfg.etcd(c.ID, srv.Endpoints()[0])})
		}
		l.cells[c.ID] = l.serve(c.ID, cli, cfg.edit)
	}
	disc, err := etcdcell.NewDiscovery(ctxT(t), l.cli, cluster, quiet)
	must(t, err)
	t.Cleanup(disc.Close)
	src := client.NewContactSource(l.store, client.ContactConfig{})
	w := router.NewWatcher(src, router.WatcherConfig{})
	must(t, w.Start(ctxT(t)))
	t.Cleanup(func() { w.Close(); src.Wait() })
	ccfg := client.DefaultConfig(w, disc)
	ccfg.Contact = src
	ccfg.IsWrite = func(method string) bool { return method == testsvc.CreditMethod }
	l.sdk, err = client.New(ccfg, nil)
	must(t, err)
	cc, err := l.sdk.Dial("ledger")
	must(t, err)
	t.Cleanup(func() { cc.Close() })
	l.ledgr = testsvc.NewClient(cc)
	return l
}

// serve registers cellID's instance and serves the ledger behind its
// guard. Credits with request ID "hold" block until the cell's Release.
func (l *lab) serve(cellID string, cli *clientv3.Client, edit func(string, *etcdcell.Config)) *ledgerCell {
	t := l.t
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	cfg := etcdcell.Local(cellID, cellID+"-0")
	cfg.Cluster, cfg.GRPCAddr, cfg.Logger = cluster, lis.Addr().String(), quiet
	if edit != nil {
		edit(cellID, &cfg)
	}
	inst, err := etcdcell.Register(ctxT(t), cli, cfg)
	must(t, err)
	lc := &ledgerCell{id: cellID, inst: inst, release: make(chan struct{}), held: make(chan struct{}, 4)}
	icpt, err := grpcguard.New(inst.Guard(), grpcguard.Config{
		Methods: map[string]grpcguard.Method{
			testsvc.CreditMethod: {Kind: cell.Write, Key: func(req any) (string, error) {
				return req.(*structpb.Struct).GetFields()["key"].GetStringValue(), nil
			}},
			testsvc.BalanceMethod:   {Kind: cell.Read},
			testsvc.StatementMethod: {Kind: cell.Read},
		},
		OnAdmit:   l.log.Admitted,
		OnRelease: l.log.Released,
	})
	must(t, err)
	hold := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s, ok := req.(*structpb.Struct); ok && s.GetFields()["requestId"].GetStringValue() == "hold" {
			lc.held <- struct{}{}
			<-lc.release
		}
		if d := l.work(); info.FullMethod == testsvc.CreditMethod && d > 0 {
			tm := time.NewTimer(d)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-ctx.Done():
			}
		}
		return handler(ctx, req)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(icpt.Unary(), hold), grpc.ChainStreamInterceptor(icpt.Stream()))
	testsvc.NewServer(cellID).Register(gs)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	lc.direct = testsvc.NewClient(cc)
	lc.stop = func() {
		cc.Close()
		lc.Release()
		gs.Stop()
		wg.Wait()
		_ = inst.Close()
	}
	t.Cleanup(lc.Stop)
	return lc
}

// pay sends one write for key through the SDK.
func (l *lab) pay(ctx context.Context, key, req string) (testsvc.Entry, error) {
	idem, err := client.NewIdempotencyKey(key)
	if err != nil {
		return testsvc.Entry{}, err
	}
	return l.ledgr.Credit(client.WithIdempotencyKey(client.WithKey(ctx, key), idem), key, 1, req)
}

// prober is the probe gate's prober: a guarded read through the SDK.
func (l *lab) prober() failover.Prober {
	return func(ctx context.Context, key string) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, _, err := l.ledgr.Balance(client.WithKey(ctx, key), key)
		return err
	}
}

// load runs writers paying random users until stop is closed.
type load struct {
	// hot, when set, holds the keys most writes go to (the keys of the
	// stage moving now).
	hot        atomic.Pointer[[]string]
	rogue      atomic.Int64 // rogue writes sent
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	lat        []time.Duration
	wg         sync.WaitGroup
	stop       chan struct{}
}

func (l *lab) startLoad(writers int, users []string) *load {
	ld := &load{stop: make(chan struct{})}
	var seq atomic.Int64
	for w := range writers {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-ld.stop:
					return
				default:
				}
				key := users[rng.IntN(len(users))]
				if h := ld.hot.Load(); h != nil && len(*h) > 0 && rng.IntN(4) != 0 {
					key = (*h)[rng.IntN(len(*h))]
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				_, err := l.pay(ctx, key, fmt.Sprint("w", seq.Add(1)))
				cancel()
				ld.mu.Lock()
				ld.lat = append(ld.lat, time.Since(start))
				if err != nil {
					ld.failed.Add(1)
					if len(ld.errs) < 10 {
						ld.errs = append(ld.errs, fmt.Errorf("pay %s: %w", key, err))
					}
				} else {
					ld.ok.Add(1)
				}
				ld.mu.Unlock()
			}
		}()
	}
	return ld
}

// startRogues starts writers that send the hot keys (which must be set) to
// every cell at once,
// as clients with stale or wrong maps would: the guards alone decide who
// writes, so two cells admitting one key at once shows up in the
// admission records. Their refusals are expected and not counted.
func (l *lab) startRogues(ld *load, writers int) {
	var seq atomic.Int64
	for w := range writers {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for {
				select {
				case <-ld.stop:
					return
				default:
				}
				h := *ld.hot.Load()
				if len(h) == 0 {
					panic("startRogues: no hot keys")
				}
				key := h[rng.IntN(len(h))]
				ld.rogue.Add(1)
				var inner sync.WaitGroup
				for _, c := range l.cells {
					if c.stopped.Load() {
						continue
					}
					inner.Add(1)
					go func() {
						defer inner.Done()
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						ctx = metadata.AppendToOutgoingContext(ctx, wire.KeyMD, key)
						_, _ = c.direct.Credit(ctx, key, 1, fmt.Sprint("rogue", seq.Add(1)))
					}()
				}
				inner.Wait()
			}
		}()
	}
}

func (ld *load) Stop() {
	close(ld.stop)
	ld.wg.Wait()
}

func users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user-%d", i)
	}
	return out
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// acquire takes the cutover lock with a short lease.
func (l *lab) acquire(ttl time.Duration) *etcdcutover.Control {
	t := l.t
	ctl, err := etcdcutover.Acquire(ctxT(t), l.cli, etcdcutover.Config{Cluster: cluster, Actor: "tester", LockTTL: ttl, Logger: quiet})
	must(t, err)
	return ctl
}

// checkNothingFrozen fails if the stored map has any frozen slot or key.
func (l *lab) checkNothingFrozen() *router.Table {
	l.t.Helper()
	tb, _, err := l.store.Load(ctxT(l.t))
	must(l.t, err)
	if fr := tb.FrozenRanges(); len(fr) > 0 {
		l.t.Errorf("frozen slots left in the map: %v", fr)
	}
	if fk := tb.FrozenKeys(); len(fk) > 0 {
		l.t.Errorf("frozen keys left in the map: %v", fk)
	}
	return tb
}

// checkSingleWriter fails on any key write-admitted by two cells at once.
func (l *lab) checkSingleWriter() {
	l.t.Helper()
	if n := l.log.Running(); n != 0 {
		l.t.Errorf("%d admissions never released", n)
	}
	for _, c := range admission.Conflicts(l.log.Records()) {
		l.t.Error(c)
	}
}

// owners counts slots per owner cell.
func owners(tb *router.Table) map[string]int {
	m := map[string]int{}
	for s := range tb.SlotCount() {
		m[tb.SlotOwner(s)]++
	}
	return m
}

func plan(t *testing.T, tb *router.Table, stages string) *failover.Plan {
	t.Helper()
	req := failover.Request{From: failover.Endpoints{IDCs: []string{"IDC-A"}}, To: failover.Endpoints{IDCs: []string{"IDC-B"}}}
	if stages != "" {
		st, err := failover.ParseStages(stages)
		must(t, err)
		req.Stages = st
	}
	p, err := failover.NewPlan(tb, req)
	must(t, err)
	return p
}

// hotKeys returns up to n keys stage moves (its canaries, then keys in its
// slots), so that writers keep the moving keys in flight: a key written
// twice at once is what a missing barrier would let two cells do.
func hotKeys(st failover.Stage, n int) []string {
	var out []string
	for _, k := range st.Keys {
		out = append(out, k.Key)
	}
	for _, m := range st.Moves {
		for s := m.First; s <= m.Last && len(out) < n; s++ {
			out = append(out, keyIn(s))
		}
	}
	return out
}

// chase points ld's hot keys at the first stage of p, and returns the
// progress hook that moves them to the stage a runner is moving.
func chase(ld *load, p *failover.Plan, next func(failover.Progress)) func(failover.Progress) {
	hot := make([][]string, len(p.Stages))
	for i, st := range p.Stages {
		hot[i] = hotKeys(st, 4)
	}
	// Never an empty set (a stage with nothing to move): the rogues keep
	// the last keys.
	for i := range hot {
		if len(hot[i]) > 0 {
			ld.hot.Store(&hot[i])
			break
		}
	}
	return func(pr failover.Progress) {
		if i := pr.Stage - 1; i >= 0 && i < len(hot) && len(hot[i]) > 0 {
			ld.hot.Store(&hot[i])
		}
		if next != nil {
			next(pr)
		}
	}
}

// keyIn returns a key whose slot is s.
func keyIn(s int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("user-%d", i); router.Slot(k, slots) == s {
			return k
		}
	}
}

// slowWrites: one credit in 8 takes 400ms, the others 2ms.
func slowWrites() time.Duration {
	if rand.IntN(8) == 0 {
		return 400 * time.Millisecond
	}
	return 2 * time.Millisecond
}
