// Package httpguard puts a cell guard (*cell.Guard) in front of an HTTP
// handler: middleware that admits a request only for a key this cell owns
// at its current epoch.
//
// Routes are declared with net/http.ServeMux patterns ("POST
// /v1/credit/{key}"), each read or write, with the key taken from the
// Cellkit-Key header (the default), a path wildcard (PathValue), a query
// parameter (Query), another header (Header) or any func(*http.Request).
// Requests no route matches follow Config.Default (a write that needs a
// key, unless changed); Exempt patterns pass through unguarded. The
// Cellkit-Epoch header, when present, is the epoch the caller routed with
// (a malformed one is 400).
//
// Refusals are written by cell/wire's WriteHTTP: WRONG_CELL is 421
// Misdirected Request with Cellkit-Owner and Cellkit-Epoch headers; FROZEN,
// FENCED and STALE_MAP are 503 with Retry-After; NO_KEY is 400. Every
// guarded response carries Cellkit-Cell. The handler's request context is
// cancelled, with the *cell.FencedError as its cause, if the instance fences
// itself while the request runs. OnAdmit, OnRelease and OnDecision report as
// in cell/grpcguard.
//
//	mw, err := httpguard.New(inst.Guard(), httpguard.Config{
//		Routes: []httpguard.Route{
//			{Pattern: "POST /v1/credit/{key}", Kind: cell.Write, Key: httpguard.PathValue("key")},
//			{Pattern: "GET /v1/balance/{key}", Kind: cell.Read, Key: httpguard.PathValue("key")},
//		},
//		Exempt: []string{"GET /healthz"},
//	})
//	if err != nil {
//		return err
//	}
//	http.ListenAndServe(addr, mw.Handler(app))
package httpguard
