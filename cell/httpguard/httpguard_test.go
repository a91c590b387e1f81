package httpguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 20 * time.Second

func table(t *testing.T, epoch uint64, edit func(*router.Table)) *router.Table {
	t.Helper()
	tb, err := router.NewTable(256)
	must(t, err)
	must(t, tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"}))
	must(t, tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"}))
	must(t, tb.Assign(router.SlotRange{First: 0, Last: 127}, "a1"))
	must(t, tb.Assign(router.SlotRange{First: 128, Last: 255}, "b1"))
	if edit != nil {
		edit(tb)
	}
	tb.SetEpoch(epoch)
	must(t, tb.Validate())
	return tb.Seal()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func keyIn(s int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("user-%d", i); router.Slot(k, 256) == s {
			return k
		}
	}
}

var (
	ownKey    = keyIn(5)
	otherKey  = keyIn(200)
	frozenKey = keyIn(7)
)

const (
	creditPattern  = "POST /v1/credit/{key}"
	balancePattern = "GET /v1/balance/{key}"
)

type harness struct {
	guard *cell.Guard
	fence *cell.Fence
	log   admission.Log
	url   string

	mu        sync.Mutex
	decisions []admission.Decision
}

func (h *harness) outcomes() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, d := range h.decisions {
		out[d.Outcome()]++
	}
	return out
}

// start serves testsvc's HTTP API, plus /healthz and /v1/hold/{key} (which
// blocks until its request context ends and reports the cause), behind the
// guard of cell a1.
func start(t *testing.T, cfg httpguard.Config, causes chan<- error) *harness {
	t.Helper()
	h := &harness{}
	h.fence = cell.NewFence(clock.Real(), 100*time.Millisecond, "a1", "a1-0")
	must(t, h.fence.Resume(time.Now(), time.Hour))
	g, err := cell.NewGuard(cell.Config{Cell: "a1", Instance: "a1-0", StaleWait: 300 * time.Millisecond, FrozenRetryAfter: 250 * time.Millisecond}, table(t, 1, nil), h.fence)
	must(t, err)
	h.guard = g
	cfg.OnAdmit, cfg.OnRelease = h.log.Admitted, h.log.Released
	cfg.OnDecision = func(d admission.Decision) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.decisions = append(h.decisions, d)
	}
	mw, err := httpguard.New(g, cfg)
	must(t, err)
	app := http.NewServeMux()
	app.Handle("/v1/", testsvc.NewServer("a1").HTTPHandler())
	app.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	app.HandleFunc("POST /v1/hold/{key}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
	})
	srv := httptest.NewServer(mw.Handler(app))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func routes() []httpguard.Route {
	return []httpguard.Route{
		{Pattern: creditPattern, Kind: cell.Write, Key: httpguard.PathValue("key")},
		{Pattern: balancePattern, Kind: cell.Read, Key: httpguard.PathValue("key")},
		{Pattern: "POST /v1/hold/{key}", Kind: cell.Write, Key: httpguard.PathValue("key")},
	}
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	must(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, string(body)
}

func credit(h *harness, key, req string) string {
	return fmt.Sprintf("%s/v1/credit/%s?amount=1&requestId=%s", h.url, key, req)
}

func TestOwnerAdmitted(t *testing.T) {
	h := start(t, httpguard.Config{Routes: routes()}, nil)
	resp, body := do(t, "POST", credit(h, ownKey, "r1"), map[string]string{"Cellkit-Epoch": "1"})
	if resp.StatusCode != 200 {
		t.Fatalf("credit: %s %s", resp.Status, body)
	}
	if got := resp.Header.Get("Cellkit-Cell"); got != "a1" {
		t.Errorf("Cellkit-Cell %q, want a1", got)
	}
	resp, body = do(t, "GET", h.url+"/v1/balance/"+ownKey, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("balance: %s %s", resp.Status, body)
	}
	rs := h.log.Records()
	if len(rs) != 2 {
		t.Fatalf("records %v", rs)
	}
	if w := rs[0]; w.Kind != cell.Write || w.Key != ownKey || w.Epoch != 1 || w.Slot != 5 || w.Method != creditPattern || w.Cell != "a1" || w.End.Before(w.Start) {
		t.Errorf("write record %+v", w)
	}
	if r := rs[1]; r.Kind != cell.Read || r.Method != balancePattern {
		t.Errorf("read record %+v", r)
	}
	if h.guard.InFlight() != 0 {
		t.Errorf("in flight %d", h.guard.InFlight())
	}
}

func TestRefusals(t *testing.T) {
	rs := append(routes(), httpguard.Route{Pattern: "POST /v2/credit", Kind: cell.Write}) // key from Cellkit-Key
	h := start(t, httpguard.Config{Routes: rs}, nil)
	h.guard.Apply(table(t, 2, func(tb *router.Table) { must(t, tb.Freeze(router.SlotRange{First: 7, Last: 7}, "c1")) }))
	for _, tc := range []struct {
		name, method, url string
		hdr               map[string]string
		status            int
		code              cell.Code
		check             func(t *testing.T, resp *http.Response, err error)
	}{
		{"wrong cell", "POST", credit(h, otherKey, "r1"), nil, 421, cell.CodeWrongCell, func(t *testing.T, resp *http.Response, err error) {
			var wc *cell.WrongCellError
			if !errors.As(err, &wc) || wc.Owner != "b1" || wc.OwnerIDC != "IDC-B" || wc.Epoch != 2 || wc.Cell != "a1" {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"frozen", "POST", credit(h, frozenKey, "r2"), nil, 503, cell.CodeFrozen, func(t *testing.T, resp *http.Response, err error) {
			var fz *cell.FrozenError
			if !errors.As(err, &fz) || fz.RetryAfter != 250*time.Millisecond || fz.Epoch != 2 {
				t.Errorf("decoded %#v", err)
			}
			if resp.Header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
			}
		}},
		{"frozen key still readable", "GET", h.url + "/v1/balance/" + frozenKey, nil, 200, "", nil},
		{"no key header", "POST", h.url + "/v2/credit", nil, 400, cell.CodeNoKey, func(t *testing.T, resp *http.Response, err error) {
			if !errors.Is(err, cell.ErrNoKey) {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"stale map", "POST", credit(h, ownKey, "r3"), map[string]string{"Cellkit-Epoch": "9"}, 503, cell.CodeStaleMap, func(t *testing.T, resp *http.Response, err error) {
			var sm *cell.StaleMapError
			if !errors.As(err, &sm) || sm.Have != 2 || sm.Want != 9 {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"malformed epoch", "POST", credit(h, ownKey, "r4"), map[string]string{"Cellkit-Epoch": "x"}, 400, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, tc.url, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %s (%s), want %d", resp.Status, body, tc.status)
			}
			err := wire.FromHTTP(resp)
			if got := cell.CodeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if resp.Header.Get("Cellkit-Cell") != "a1" {
				t.Errorf("Cellkit-Cell %q", resp.Header.Get("Cellkit-Cell"))
			}
			if tc.check != nil {
				tc.check(t, resp, err)
			}
		})
	}
	want := map[string]int{"WRONG_CELL": 1, "FROZEN": 1, "NO_KEY": 1, "STALE_MAP": 1, "error": 1, "admitted": 1}
	if got := h.outcomes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
}

func TestKeySources(t *testing.T) {
	h := start(t, httpguard.Config{
		Routes: []httpguard.Route{
			{Pattern: "POST /v1/credit/{key}", Kind: cell.Write, Key: httpguard.Query("user")},
			{Pattern: "GET /v1/balance/{key}", Kind: cell.Read, Key: httpguard.Header("X-User")},
		},
		Exempt: []string{"GET /healthz"},
	}, nil)
	// The query parameter, not the path, decides.
	if resp, body := do(t, "POST", credit(h, otherKey, "r1")+"&user="+ownKey, nil); resp.StatusCode != 200 {
		t.Fatalf("query key: %s %s", resp.Status, body)
	}
	if resp, _ := do(t, "POST", credit(h, ownKey, "r2")+"&user="+otherKey, nil); resp.StatusCode != 421 {
		t.Fatalf("query key of b1: %s, want 421", resp.Status)
	}
	if resp, _ := do(t, "GET", h.url+"/v1/balance/x", map[string]string{"X-User": ownKey}); resp.StatusCode != 200 {
		t.Fatalf("header key: %s", resp.Status)
	}
	// Exempt.
	if resp, body := do(t, "GET", h.url+"/healthz", nil); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("healthz: %s %s", resp.Status, body)
	}
	// Not declared: a write keyed by Cellkit-Key.
	if resp, _ := do(t, "GET", h.url+"/v1/other", nil); resp.StatusCode != 400 || wire.FromHTTP(resp) == nil {
		t.Fatalf("undeclared route without key: %s, want NO_KEY", resp.Status)
	}
	if resp, _ := do(t, "GET", h.url+"/v1/other", map[string]string{"Cellkit-Key": ownKey}); resp.StatusCode != 404 {
		t.Fatalf("undeclared route with key: %s, want the app's 404", resp.Status)
	}
	rs := h.log.Records()
	if len(rs) != 3 || rs[2].Kind != cell.Write || rs[2].Method != "" || rs[2].Key != ownKey {
		t.Fatalf("records %v", rs)
	}
}

func TestNewerEpochWaitsForTheGuard(t *testing.T) {
	h := start(t, httpguard.Config{Routes: routes()}, nil)
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", credit(h, ownKey, "r1"), nil)
		req.Header.Set("Cellkit-Epoch", "2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b)}
	}()
	h.guard.Apply(table(t, 2, nil))
	if r := <-done; r.status != 200 {
		t.Fatalf("credit with epoch 2: %d %s", r.status, r.body)
	}
	if rs := h.log.Records(); len(rs) != 1 || rs[0].Epoch != 2 {
		t.Fatalf("records %v", rs)
	}
}

func TestFenceCancelsRunningRequest(t *testing.T) {
	causes := make(chan error, 1)
	h := start(t, httpguard.Config{Routes: routes()}, causes)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/v1/hold/"+ownKey, nil)
	resp, err := http.DefaultClient.Do(req) // returns once the handler flushed its 202
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || h.guard.InFlight() != 1 {
		t.Fatalf("hold: %s, in flight %d", resp.Status, h.guard.InFlight())
	}
	h.fence.Trip("test: lease lost")
	var fe *cell.FencedError
	if cause := <-causes; !errors.As(cause, &fe) {
		t.Fatalf("request context cause %v, want the FencedError", cause)
	}
	// The body ends when the handler chain returned, after the release.
	_, _ = io.ReadAll(resp.Body)
	if n := h.guard.InFlight(); n != 0 {
		t.Fatalf("in flight %d after the held request ended", n)
	}
	r2, _ := do(t, "POST", credit(h, ownKey, "after"), nil)
	if r2.StatusCode != 503 || !errors.Is(wire.FromHTTP(r2), cell.ErrFenced) {
		t.Fatalf("after the fence tripped: %s, want 503 FENCED", r2.Status)
	}
	if rs := h.log.Records(); len(rs) != 1 || rs[0].End.IsZero() {
		t.Fatalf("records %v, want the held request, ended", rs)
	}
}

func TestBadConfig(t *testing.T) {
	g, err := cell.NewGuard(cell.Config{Cell: "a1", Instance: "a1-0"}, table(t, 1, nil), nil)
	must(t, err)
	for name, cfg := range map[string]httpguard.Config{
		"bad pattern": {Routes: []httpguard.Route{{Pattern: "POST"}}},
		"conflict":    {Routes: []httpguard.Route{{Pattern: "/a/{x}"}, {Pattern: "/a/{y}"}}},
		"bad kind":    {Routes: []httpguard.Route{{Pattern: "/a", Kind: 7}}},
	} {
		if _, err := httpguard.New(g, cfg); !errors.Is(err, cell.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
}
