package paycell_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell"
	"github.com/cellkit/cellkit/paycell/schema"
	"github.com/cellkit/cellkit/router"
)

// An api is a way to reach a service: directly, or over HTTP through the
// cell guard.
type api struct {
	name string
	wrap func(t *testing.T, svc *paycell.Service) paycell.API
}

var apis = []api{
	{"direct", func(_ *testing.T, svc *paycell.Service) paycell.API { return svc }},
	{"http", func(t *testing.T, svc *paycell.Service) paycell.API {
		c := newClusterWith(t, oneCellMap(t), "a1")
		return paycell.NewClient(serveGuarded(t, c.inst["a1"].Guard(), svc, nil), nil)
	}},
}

// forEachAPI runs f per dialect and api with a fresh service of a1's.
func forEachAPI(t *testing.T, f func(t *testing.T, svc *paycell.Service, bank *fakeBank, api paycell.API)) {
	forEachDialect(t, func(t *testing.T, d dialect) {
		for _, a := range apis {
			t.Run(a.name, func(t *testing.T) {
				svc, bank := newService(t, d)
				f(t, svc, bank, a.wrap(t, svc))
			})
		}
	})
}

// serveGuarded serves svc's HTTP API behind guard and returns its URL.
func serveGuarded(t *testing.T, guard *cell.Guard, svc *paycell.Service, log *admission.Log) string {
	t.Helper()
	var onAdmit, onRelease func(admission.Record)
	if log != nil {
		onAdmit, onRelease = log.Admitted, log.Released
	}
	mw, err := httpguard.New(guard, paycell.HTTPGuardConfig(onAdmit, onRelease))
	must(t, err)
	srv := httptest.NewServer(mw.Handler(svc.HTTPHandler()))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestHTTPGuardRefusesOtherCellsKeys(t *testing.T) {
	c := newCluster(t, "a1", "b1")
	svcA, _ := newService(t, dialects[0])
	svcB, _ := newService(t, dialects[0], func(cfg *paycell.Config) { cfg.Cell = "b1" })
	var log admission.Log
	a := paycell.NewClient(serveGuarded(t, c.inst["a1"].Guard(), svcA, &log), nil)
	b := paycell.NewClient(serveGuarded(t, c.inst["b1"].Guard(), svcB, &log), nil)
	ctx := ctxT(t)
	mine, theirs := usersIn(1, 0, 511)[0], usersIn(1, 512, 1023)[0]
	fund(t, a, mine, 100)
	fund(t, b, theirs, 100)
	o := payOrder(t, b, theirs, "m1", 10, "1")
	top, err := b.TopUp(ctx, paycell.BankRequest{Owner: theirs, RequestID: "t9", Amount: 5})
	must(t, err)
	before := checkBooks(t, svcA)

	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"open", func() error {
			_, err := a.OpenAccount(ctx, paycell.OpenRequest{Owner: theirs, RequestID: "x"})
			return err
		}},
		{"balance (a read)", func() error { _, err := a.Balance(ctx, theirs); return err }},
		{"top-up", func() error {
			_, err := a.TopUp(ctx, paycell.BankRequest{Owner: theirs, RequestID: "x", Amount: 1})
			return err
		}},
		{"pay by an order of theirs", func() error { _, err := a.Pay(ctx, paycell.PayRequest{OrderID: o.OrderID, RequestID: "x"}); return err }},
		{"refund by an order of theirs", func() error {
			_, err := a.Refund(ctx, paycell.RefundRequest{OrderID: o.OrderID, RequestID: "x", Amount: 1})
			return err
		}},
		{"callback by an operation of theirs", func() error {
			_, err := a.BankCallback(ctx, paycell.CallbackRequest{OpID: top.OpID, Status: paycell.BankSucceeded})
			return err
		}},
	} {
		err := tc.do()
		var ae *paycell.APIError
		var wc *cell.WrongCellError
		if !errors.As(err, &ae) || ae.Status != http.StatusMisdirectedRequest || ae.Code != string(cell.CodeWrongCell) || !errors.As(err, &wc) || wc.Owner != "b1" {
			t.Errorf("%s for %s at a1: %v, want 421 WRONG_CELL owner b1", tc.name, theirs, err)
		}
		if !ae.Temporary() {
			t.Errorf("%s: a guard refusal should be temporary", tc.name)
		}
	}
	after := checkBooks(t, svcA)
	if after.Txns != before.Txns || after.Balances != before.Balances || after.Orders != before.Orders {
		t.Fatalf("refused requests wrote to a1's books: before %+v, after %+v", before, after)
	}
	for _, r := range log.Records() {
		if r.Cell == "a1" && router.KeySlot(r.Key, slots) >= 512 {
			t.Errorf("a1 admitted %v", r)
		}
	}
	if c := log.Conflicts(); len(c) > 0 {
		t.Fatalf("conflicts: %v", c)
	}

	// A frozen key: its writes are refused, its reads served.
	c.update(t, func(tb *router.Table) error {
		s := tb.Slot(mine)
		return tb.Freeze(router.SlotRange{First: s, Last: s}, "cut-1")
	})
	_, err = a.TopUp(ctx, paycell.BankRequest{Owner: mine, RequestID: "frozen", Amount: 1})
	var ae *paycell.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !errors.Is(err, cell.ErrFrozen) {
		t.Fatalf("write of a frozen key: %v, want 503 FROZEN", err)
	}
	if acc, err := a.Balance(ctx, mine); err != nil || acc.Balance != 100 {
		t.Fatalf("read of a frozen key: %+v, %v", acc, err)
	}
}

// TestHTTPErrors checks the status, code and cell of error replies.
func TestHTTPErrors(t *testing.T) {
	svc, _ := newService(t, dialects[0])
	c := newClusterWith(t, oneCellMap(t), "a1")
	base := serveGuarded(t, c.inst["a1"].Guard(), svc, nil)
	cl := paycell.NewClient(base, nil)
	fund(t, cl, "u-1", 10)
	ctx := ctxT(t)
	o, err := cl.CreateOrder(ctx, paycell.CreateOrderRequest{Owner: "u-1", RequestID: "o1", Merchant: "m1", Amount: 20})
	must(t, err)
	ord, _ := router.NewID("ord", "u-1")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     paycell.Code
	}{
		{"insufficient funds", "POST", "/v1/orders/" + o.OrderID + "/pay", `{"requestId":"p1"}`, 402, paycell.CodeInsufficientFunds},
		{"unknown order", "POST", "/v1/orders/" + ord + "/pay", `{"requestId":"p1"}`, 404, paycell.CodeNotFound},
		{"reused requestId", "POST", "/v1/users/u-1/orders", `{"requestId":"o1","merchant":"m1","amount":21}`, 409, paycell.CodeConflict},
		{"no body", "POST", "/v1/users/u-1/open", ``, 400, paycell.CodeBadRequest},
		{"not JSON", "POST", "/v1/users/u-1/open", `requestId=1`, 400, paycell.CodeBadRequest},
		{"an array", "POST", "/v1/users/u-1/open", `[1]`, 400, paycell.CodeBadRequest},
		{"unknown field", "POST", "/v1/users/u-1/open", `{"requestId":"a","x":1}`, 400, paycell.CodeBadRequest},
		{"amount as a string", "POST", "/v1/users/u-1/topups", `{"requestId":"a","amount":"5"}`, 400, paycell.CodeBadRequest},
		{"fractional amount", "POST", "/v1/users/u-1/topups", `{"requestId":"a","amount":5.5}`, 400, paycell.CodeBadRequest},
		{"huge amount", "POST", "/v1/users/u-1/topups", `{"requestId":"a","amount":99999999999999999999}`, 400, paycell.CodeBadRequest},
		{"trailing data", "POST", "/v1/users/u-1/open", `{"requestId":"a"}{}`, 400, paycell.CodeBadRequest},
		{"body too large", "POST", "/v1/users/u-1/open", `{"requestId":"` + strings.Repeat("a", paycell.MaxBodyBytes) + `"}`, 400, paycell.CodeBadRequest},
		{"bad limit", "GET", "/v1/users/u-1/statement?limit=ten", ``, 400, paycell.CodeBadRequest},
		{"zero limit", "GET", "/v1/users/u-1/statement?limit=0", ``, 400, paycell.CodeBadRequest},
		{"bad owner", "GET", "/v1/users/u%3A1/balance", ``, 400, paycell.CodeBadRequest},
		{"malformed order id", "POST", "/v1/orders/ord_1/pay", `{"requestId":"p"}`, 400, paycell.CodeBadRequest},
		{"bad callback status", "POST", "/v1/bank/callbacks/" + strings.Replace(ord, "ord_", "bop_", 1), `{"status":"ok"}`, 400, paycell.CodeBadRequest},
		{"unknown route", "GET", "/v1/nothing", ``, 404, paycell.CodeNotFound},
		{"wrong method", "GET", "/v1/users/u-1/open", ``, 404, paycell.CodeNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		must(t, err)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb struct {
			Error string       `json:"error"`
			Code  paycell.Code `json:"code"`
			Cell  string       `json:"cell"`
		}
		if err := json.Unmarshal(data, &eb); err != nil || resp.StatusCode != tc.status || eb.Code != tc.code || eb.Cell != "a1" || eb.Error == "" {
			t.Errorf("%s: HTTP %d %s; want %d %s with a message and cell a1", tc.name, resp.StatusCode, data, tc.status, tc.code)
		}
	}
	// The client maps them to typed errors with status and code.
	_, err = cl.Pay(ctx, paycell.PayRequest{OrderID: o.OrderID, RequestID: "p1"})
	var ae *paycell.APIError
	if !errors.As(err, &ae) || ae.Status != 402 || ae.Code != string(paycell.CodeInsufficientFunds) || ae.Cell != "a1" || !errors.Is(err, paycell.ErrInsufficientFunds) || ae.Temporary() {
		t.Fatalf("client error %#v", err)
	}
}

// FuzzHTTPRequest sends arbitrary methods, paths and bodies to the API:
// the answer is JSON with a code and the cell for every error, bad input
// is a 400 (or a 404/405 for what is not a route), never a panic or a 500.
func FuzzHTTPRequest(f *testing.F) {
	ord, _ := router.NewID("ord", "u-1")
	bop, _ := router.NewID("bop", "u-1")
	for _, s := range [][3]string{
		{"POST", "/v1/users/u-1/open", `{"requestId":"r1"}`},
		{"POST", "/v1/users/u-1/orders", `{"requestId":"r2","merchant":"m1","amount":5}`},
		{"POST", "/v1/users/u-1/topups", `{"requestId":"r3","amount":1e3}`},
		{"POST", "/v1/users/u-1/withdrawals", `{"requestId":"r4","amount":-1}`},
		{"POST", "/v1/orders/" + ord + "/pay", `{"requestId":"r5"}`},
		{"POST", "/v1/orders/" + ord + "/refund", `{"requestId":"r6","amount":1}`},
		{"POST", "/v1/bank/callbacks/" + bop, `{"status":"succeeded","bankRef":"x"}`},
		{"GET", "/v1/users/u-1/statement?limit=3", ``},
		{"GET", "/v1/orders/" + ord, ``},
		{"POST", "/v1/users/%00/open", `{"requestId":null}`},
		{"PUT", "/v1//users/../open", `{`},
		{"POST", "/v1/users/u-1/open", `{"requestId":"` + strings.Repeat("é", 40) + `"}`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	ctx := ctxT(f)
	db, d, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(f.TempDir(), "fuzz.db"))
	must(f, err)
	f.Cleanup(func() { db.Close() })
	must(f, schema.Migrate(ctx, db, d))
	svc, err := paycell.New(paycell.Config{Cell: "a1", SlotCount: slots, DB: db, Dialect: d, Logger: quiet})
	must(f, err)
	h := svc.HTTPHandler()
	f.Fuzz(func(t *testing.T, method, path, body string) {
		u, err := url.ParseRequestURI(path)
		if err != nil || !validMethod(method) {
			return // net/http would not deliver it
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method, req.URL, req.RequestURI = method, u, path
		req.Body = io.NopCloser(bytes.NewReader([]byte(body)))
		req.ContentLength = int64(len(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 402, 404, 405, 409, 301, 307, 308:
		default:
			t.Fatalf("%s %s %q: HTTP %d %s", method, path, body, rec.Code, rec.Body.Bytes())
		}
		if rec.Code >= 400 && rec.Code != 405 {
			var eb struct {
				Code paycell.Code `json:"code"`
				Cell string       `json:"cell"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Code == "" || eb.Cell != "a1" {
				t.Fatalf("%s %s %q: HTTP %d with body %s", method, path, body, rec.Code, rec.Body.Bytes())
			}
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
