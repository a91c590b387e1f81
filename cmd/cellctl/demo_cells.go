package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router/gateway"
)

// The data-plane part of the tour: a guarded ledger instance per cell,
// registered in etcd, and a cellrouter in front of them.

type demoCellRun struct {
	Cell     string `json:"cell"`
	IDC      string `json:"idc"`
	Instance string `json:"instance"`
	HTTPAddr string `json:"http"`
	Acked    uint64 `json:"ackedEpoch"`
}

type demoPayment struct {
	Key      string  `json:"key"`
	Owner    string  `json:"owner"`
	ServedBy string  `json:"servedBy"`
	Balance  float64 `json:"balance"`
}

type demoRefusal struct {
	Key      string `json:"key"`
	SentTo   string `json:"sentTo"`
	Status   int    `json:"status"`
	Code     string `json:"code"`
	Owner    string `json:"owner"`
	Epoch    string `json:"epoch"`
	Admitted int    `json:"writesAdmittedByWrongCell"`
}

type demoPlane struct {
	log       *admission.Log
	instances map[string]*etcdcell.Instance
	addrs     map[string]string
	router    string // base URL of the router
	http      *http.Client
}

func (d *demo) startCells() error {
	cli := d.cli
	if cli == nil {
		return errors.New("demo: no etcd client")
	}
	dc := &demoPlane{log: &admission.Log{}, instances: map[string]*etcdcell.Instance{}, addrs: map[string]string{},
		http: &http.Client{Timeout: 10 * time.Second}}
	d.cells = dc
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range d.table.Cells() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		cfg := etcdcell.DefaultConfig(c.ID, c.ID+"-0")
		cfg.Cluster, cfg.HTTPAddr, cfg.Logger = demoCluster, l.Addr().String(), quiet
		ctx, cancel := d.op()
		in, err := etcdcell.Register(ctx, cli, cfg)
		cancel()
		if err != nil {
			l.Close()
			return err
		}
		d.closers = append(d.closers, func() { in.Close() })
		mw, err := httpguard.New(in.Guard(), httpguard.Config{
			Routes: []httpguard.Route{
				{Pattern: "POST /v1/credit/{key}", Kind: cell.Write, Key: httpguard.PathValue("key")},
				{Pattern: "GET /v1/balance/{key}", Kind: cell.Read, Key: httpguard.PathValue("key")},
			},
			OnAdmit: dc.log.Admitted, OnRelease: dc.log.Released,
		})
		if err != nil {
			l.Close()
			return err
		}
		srv := &http.Server{Handler: mw.Handler(testsvc.NewServer(c.ID).HTTPHandler()), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		d.closers = append(d.closers, func() { srv.Close() })
		dc.instances[c.ID], dc.addrs[c.ID] = in, l.Addr().String()
		d.res.Instances = append(d.res.Instances, demoCellRun{Cell: c.ID, IDC: c.IDC, Instance: cfg.Instance, HTTPAddr: cfg.HTTPAddr, Acked: in.Acked()})
	}
	d.say("Each cell runs a small ledger behind its guard, which admits a request only")
	d.say("for a key the cell owns at its current map epoch. Each instance holds an etcd")
	d.say("lease, acks the epoch it applied and publishes its address:")
	for _, r := range d.res.Instances {
		d.say("  %-3s %s  instance %s on %s, acked epoch %d", r.Cell, r.IDC, r.Instance, r.HTTPAddr, r.Acked)
	}
	return nil
}

func (d *demo) startRouter() error {
	cli := d.cli
	ctx, cancel := d.op()
	defer cancel()
	disc, err := etcdcell.NewDiscovery(ctx, cli, demoCluster, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { disc.Close() })
	cfg := gateway.DefaultConfig()
	cfg.HTTP.Routes = []gateway.Route{{Prefix: "/v1/", Keys: []gateway.KeySource{{Path: "/v1/*/{key}"}}}}
	g, err := gateway.New(cfg, gateway.Options{Source: d.store, Discovery: disc})
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.Close()
		return err
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); g.Serve(sctx, gateway.Listeners{HTTP: l}) }()
	d.closers = append(d.closers, func() { stop(); <-served; g.Close() })
	d.cells.router = "http://" + l.Addr().String()
	for deadline := time.Now().Add(d.a.timeout); g.Ready() != nil; {
		if time.Now().After(deadline) {
			return fmt.Errorf("router not ready: %w", g.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.res.Router = d.cells.router
	d.say("cellrouter listens on %s. It takes the key from the path (/v1/*/{key}),", d.cells.router)
	d.say("finds the owner in its copy of the map and the owner's instances in etcd.")
	return nil
}

func (d *demo) payThroughRouter() error {
	dc := d.cells
	rows := make(paymentList, 0, len(demoUsers))
	for _, user := range demoUsers {
		owner := d.table.Owner(user)
		var e testsvc.Entry
		u := fmt.Sprintf("%s/v1/credit/%s?amount=10&requestId=%s", dc.router, url.PathEscape(user), url.QueryEscape("demo-"+user))
		status, err := d.postJSON(u, nil, &e)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("credit %s through the router: HTTP %d", user, status)
		}
		if e.Cell != owner.ID {
			return fmt.Errorf("credit for %s served by %s, but the map says %s owns it", user, e.Cell, owner.ID)
		}
		rows = append(rows, demoPayment{Key: user, Owner: owner.ID, ServedBy: e.Cell, Balance: e.Balance})
	}
	d.res.Payments = rows
	d.say("Credit 10 to each user through the router; every payment lands on its owner:")
	d.show(rows)
	d.say("The canary %s was served by %s in %s: the whitelist pins it there.", d.canary().Key, d.res.Canary.ToCell, d.res.Canary.ToIDC)
	return nil
}

func (d *demo) refuseWrongCell() error {
	dc := d.cells
	// A user another cell owns, sent straight to a1, skipping the router.
	var user string
	for _, u := range demoUsers {
		if d.table.Owner(u).ID != "a1" {
			user = u
			break
		}
	}
	u := fmt.Sprintf("http://%s/v1/credit/%s?amount=1000&requestId=%s", dc.addrs["a1"], url.PathEscape(user), "demo-bypass")
	resp, err := dc.http.Post(u, "", nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ref := &demoRefusal{Key: user, SentTo: "a1", Status: resp.StatusCode, Code: resp.Header.Get(wire.CodeMD),
		Owner: resp.Header.Get(wire.OwnerMD), Epoch: resp.Header.Get(wire.EpochMD)}
	for _, r := range dc.log.Records() {
		if r.Cell == "a1" && r.Key == user {
			ref.Admitted++
		}
	}
	d.res.Refusal = ref
	d.say("Now send a credit for %s straight to a1, bypassing the router (a stale client would):", user)
	d.say("  POST %s", u)
	d.say("  -> HTTP %d %s, owner %s, epoch %s", ref.Status, ref.Code, ref.Owner, ref.Epoch)
	if ref.Status != http.StatusMisdirectedRequest || ref.Owner != d.table.Owner(user).ID || ref.Admitted != 0 {
		return fmt.Errorf("a1 did not refuse %s cleanly: %+v", user, ref)
	}
	d.say("a1's guard refused it: the money did not move, and the answer says where %s lives.", user)

	// A client cannot steer the router either: forged cellkit headers are dropped.
	forged := user
	for _, u := range demoUsers {
		if d.table.Owner(u).ID != d.table.Owner(user).ID {
			forged = u
			break
		}
	}
	req, _ := http.NewRequest(http.MethodGet, dc.router+"/v1/balance/"+url.PathEscape(user), nil)
	req.Header.Set("Cellkit-Key", forged) // owned by another cell
	req.Header.Set("Cellkit-Epoch", "999999")
	var e testsvc.Entry
	status, err := d.do(req, &e)
	if err != nil {
		return err
	}
	if status != http.StatusOK || e.Cell != d.table.Owner(user).ID {
		return fmt.Errorf("forged headers changed the route: HTTP %d from %s", status, e.Cell)
	}
	d.say("Through the router, a read of %s's balance with forged headers (Cellkit-Key: %s,", user, forged)
	d.say("owned by %s; Cellkit-Epoch: 999999) is still routed by its own key: %.0f, from %s.", d.table.Owner(forged).ID, e.Balance, e.Cell)
	if c := admission.Conflicts(dc.log.Records()); len(c) > 0 {
		return fmt.Errorf("two cells admitted writes for one key at once: %v", c)
	}
	writes := 0
	for _, r := range dc.log.Records() {
		if r.Kind == cell.Write {
			writes++
		}
	}
	d.say("The guards' admission records: %d writes admitted, no key written by two cells.", writes)
	return nil
}

func (d *demo) postJSON(u string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequest(http.MethodPost, u, body)
	if err != nil {
		return 0, err
	}
	return d.do(req, out)
}

func (d *demo) do(req *http.Request, out any) (int, error) {
	resp, err := d.cells.http.Do(req.WithContext(d.a.ctx))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode reply from %s: %w", req.URL, err)
		}
	}
	return resp.StatusCode, nil
}

// paymentList prints as a table.
type paymentList []demoPayment

func (p paymentList) writeTable(w io.Writer) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "KEY\tOWNER (MAP)\tSERVED BY\tBALANCE")
	for _, r := range p {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\n", r.Key, r.Owner, r.ServedBy, r.Balance)
	}
	return tw.Flush()
}
