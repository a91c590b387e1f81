package gateway

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
)

// headVerdict is what parseHead makes of a request head.
type headVerdict int

const (
	// headSlow: not for the fast parser; net/http's parser decides (on the
	// plain path or after a hand-off), as it did before the fast parser.
	headSlow headVerdict = iota
	// headFast: parsed; the request is plain and unambiguous.
	headFast
	// headStd: a head with a bare CR or LF: net/http's server, which reads
	// lines ending in LF alone, serves the connection from then on.
	headStd
	// headBad: a request to refuse (400, connection closed): ambiguous
	// framing (Content-Length with Transfer-Encoding, several or malformed
	// Content-Lengths), obsolete line folding, a missing or repeated Host.
	headBad
)

// parseHead parses a request head (the request line and the header lines,
// each ending in CRLF, and the empty line) when it is the common, plain
// kind: "METHOD /path[?query] HTTP/1.1", token header names, values of
// visible ASCII, SP and HTAB, exactly one Host, at most one Content-Length
// of at most h1MaxBody, and no Transfer-Encoding, Upgrade, Expect, Trailer
// or Pragma. It is stricter than net/http's parser: whatever it accepts,
// http.ReadRequest plus the checks of net/http's server accept too, with
// the same method, target, Host, headers and body length (FuzzHeadParser
// checks this). Anything else is headSlow, except framing that could be
// read two ways (request smuggling), which is headBad.
//
// It allocates one string for the whole head; the method, target, header
// names (when canonical already) and values are substrings of it. With a
// scratch, the request, its URL, header map and values live there (the
// connection's previous request is done with them), else they are new.
func parseHead(head []byte, sc *headScratch) (*http.Request, headVerdict) {
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) || head[0] == '\r' || head[0] == '\n' {
		return nil, headStd // LF line ends, or empty lines before the request
	}
	// A bare CR or LF anywhere: net/http reads lines ending in LF alone, so
	// only it may decide what such a head means.
	if !crlfOnly(head) {
		return nil, headStd
	}
	s := string(head[:len(head)-2]) // every line ends in CRLF
	eol := strings.Index(s, "\r\n")
	line := s[:eol]
	s = s[eol+2:]

	// Request line: METHOD SP origin-form SP HTTP/1.1, single spaces.
	// Anything else is headSlow, decided after the header lines were
	// checked for ambiguous framing.
	var u url.URL
	var method, target string
	slow := true
	if sp := strings.IndexByte(line, ' '); sp > 0 && sp < len(line)-len(" HTTP/1.1") && strings.HasSuffix(line, " HTTP/1.1") {
		method, target = line[:sp], line[sp+1:len(line)-len(" HTTP/1.1")]
		u, slow = originForm(target)
		slow = !slow
		for i := 0; i < len(method); i++ {
			if c := method[i]; c < 'A' || c > 'Z' {
				slow = true
			}
		}
	}

	// Header lines. Count them first to size the map and the values.
	n := strings.Count(s, "\r\n")
	if sc == nil {
		sc = &headScratch{}
	}
	h, vals := sc.header(n)
	var host, cl, conn string
	nhost, ncl := 0, 0
	te := false
	for s != "" {
		eol := strings.Index(s, "\r\n")
		hl := s[:eol]
		s = s[eol+2:]
		if hl == "" {
			return nil, headSlow
		}
		if hl[0] == ' ' || hl[0] == '\t' {
			return nil, headBad // obs-fold (RFC 9112 5.2)
		}
		name, value, ok := headerField(hl)
		if !ok {
			return nil, headSlow
		}
		switch name {
		case "Host":
			nhost++
			host = value
			continue // net/http's server takes Host out of the header
		case "Content-Length":
			ncl++
			cl = value
		case "Transfer-Encoding":
			te = true
		case "Connection":
			if conn == "" {
				conn = value
			} else {
				conn += "," + value
			}
		case "Upgrade", "Expect", "Trailer", "Pragma":
			slow = true
		}
		if vv := h[name]; vv != nil {
			h[name] = append(vv, value)
		} else {
			vals[0] = value
			h[name] = vals[:1:1]
			vals = vals[1:]
		}
	}
	if nhost != 1 || ncl > 1 || te && ncl > 0 {
		return nil, headBad // RFC 9112 3.2, 6.1, 6.3
	}
	length := int64(0)
	if ncl == 1 {
		if cl == "" {
			return nil, headBad
		}
		for i := 0; i < len(cl); i++ {
			if c := cl[i]; c < '0' || c > '9' {
				return nil, headBad // signed, spaced, hex or not a number
			}
		}
		if len(cl) > 7 {
			return nil, headSlow // more than h1MaxBody: net/http streams it
		}
		for i := 0; i < len(cl); i++ {
			length = length*10 + int64(cl[i]-'0')
		}
		if length > h1MaxBody {
			return nil, headSlow
		}
	}
	if te || slow || !validHost(host) {
		return nil, headSlow
	}
	sc.url = u
	sc.req = http.Request{
		Method: method, URL: &sc.url, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: length, Host: host, RequestURI: target,
		Close: hasToken(conn, "close"), Body: http.NoBody,
	}
	return &sc.req, headFast
}

// headScratch is where parseHead builds a request: one per lean server
// connection, reused by each of its requests in turn.
type headScratch struct {
	req  http.Request
	url  url.URL
	h    http.Header
	vals []string
}

// header returns an empty header map and n value slots.
func (sc *headScratch) header(n int) (http.Header, []string) {
	if sc.h == nil {
		sc.h = make(http.Header, n)
	} else {
		clear(sc.h)
	}
	if cap(sc.vals) < n {
		sc.vals = make([]string, n)
	}
	return sc.h, sc.vals[:n]
}

// crlfOnly reports whether every CR in b is followed by LF and every LF
// preceded by CR (no bare CR or LF): each LF preceded by a CR accounts for
// as many CRs as there are LFs, so when the counts match there is no other.
func crlfOnly(b []byte) bool {
	if bytes.Count(b, []byte{'\r'}) != bytes.Count(b, []byte{'\n'}) {
		return false
	}
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return true
		}
		i += j
		if i == 0 || b[i-1] != '\r' {
			return false
		}
		i++
	}
}

// originForm parses a request target of the plain kind: a path of
// characters that need no escaping (so that url.ParseRequestURI leaves it
// as it is: no RawPath), then an optional non-empty query of visible ASCII
// other than '#'.
func originForm(t string) (url.URL, bool) {
	if t == "" || t[0] != '/' {
		return url.URL{}, false
	}
	path, query, hasQuery := strings.Cut(t, "?")
	for i := 0; i < len(path); i++ {
		if !isPathByte(path[i]) {
			return url.URL{}, false
		}
	}
	if hasQuery {
		if query == "" {
			return url.URL{}, false
		}
		for i := 0; i < len(query); i++ {
			if c := query[i]; c <= ' ' || c >= 0x7f || c == '#' {
				return url.URL{}, false
			}
		}
	}
	return url.URL{Path: path, RawQuery: query}, true
}

func isPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
		return true
	}
	return false
}

// validHost accepts a host[:port] of letters, digits and . - _ : [ ]
// (a subset of what net/http's server accepts).
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// isTokenByte reports whether c may appear in a header name (RFC 9110
// 5.6.2 tchar).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func trimOWS[T ~string | ~[]byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// hasToken reports whether the comma-separated list v holds token
// (case-insensitively), as net/http reads the Connection header.
func hasToken(v, token string) bool {
	for v != "" {
		var f string
		f, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(trimOWS(f), token) {
			return true
		}
	}
	return false
}

// respHead is what scanRespHead learned of a response head.
type respHead struct {
	code    int
	length  int64
	close   bool // Connection: close
	date    bool // a Date header
	hopOnly bool // every hop-by-hop header is one hopByHop names (writeRawHead drops it by name)
}

// scanRespHead checks a response head from a cell (the status line, the
// header lines and the empty line, each ending in CRLF) for the common
// kind: "HTTP/1.1 NNN reason", a final status other than 204 and 304,
// token header names, values of visible ASCII, SP and HTAB, exactly one
// Content-Length and no Transfer-Encoding or Trailer, to a request other
// than HEAD. Anything else is left to http.ReadResponse (false). Whatever
// it accepts, http.ReadResponse reads the same way (FuzzRespHeadParser).
// It allocates nothing.
func scanRespHead(head []byte, method string) (respHead, bool) {
	var rh respHead
	if method == http.MethodHead || !bytes.HasSuffix(head, []byte("\r\n\r\n")) || len(head) < len("HTTP/1.1 200 \r\n\r\n") {
		return rh, false
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		return rh, false
	}
	if !crlfOnly(head) {
		return rh, false
	}
	b := head[:len(head)-2]
	eol := bytes.Index(b, crlf)
	line := b[:eol]
	b = b[eol+2:]
	if len(line) < len("HTTP/1.1 200") {
		return rh, false
	}
	c0, c1, c2 := line[9], line[10], line[11]
	if c0 < '2' || c0 > '9' || c1 < '0' || c1 > '9' || c2 < '0' || c2 > '9' || len(line) > 12 && line[12] != ' ' {
		return rh, false
	}
	rh.code = int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0')
	if rh.code == http.StatusNoContent || rh.code == http.StatusNotModified {
		return rh, false
	}
	if !validFieldValue(line[9:]) { // the reason phrase
		return rh, false
	}
	var cl []byte
	ncl := 0
	rh.hopOnly = true
	for len(b) > 0 {
		eol := bytes.Index(b, crlf)
		hl := b[:eol]
		b = b[eol+2:]
		if len(hl) == 0 || hl[0] == ' ' || hl[0] == '\t' {
			return rh, false
		}
		name, value, ok := headerFieldBytes(hl)
		if !ok {
			return rh, false
		}
		switch {
		case equalFold(name, "content-length"):
			ncl++
			cl = value
		case equalFold(name, "transfer-encoding"), equalFold(name, "trailer"):
			return rh, false
		case equalFold(name, "date"):
			rh.date = true
		case equalFold(name, "connection"):
			// Tokens other than close and keep-alive name more headers
			// to drop: the raw path leaves those to removeHopByHop.
			for f := range bytes.SplitSeq(value, []byte(",")) {
				f = bytes.Trim(f, " \t")
				switch {
				case equalFold(f, "close"):
					rh.close = true
				case len(f) == 0, equalFold(f, "keep-alive"):
				default:
					rh.hopOnly = false
				}
			}
		}
	}
	if ncl != 1 || len(cl) == 0 || len(cl) > 18 {
		return rh, false
	}
	for _, c := range cl {
		if c < '0' || c > '9' {
			return rh, false
		}
		rh.length = rh.length*10 + int64(c-'0')
	}
	return rh, true
}

var crlf = []byte("\r\n")

// headerFieldBytes is headerField on bytes, without canonicalizing the
// name: the name and the value without surrounding whitespace; ok is false
// for a line the fast paths do not take.
func headerFieldBytes(hl []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(hl, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name, value = hl[:colon], trimOWS(hl[colon+1:])
	if !validFieldName(name) || !validFieldValue(value) {
		return nil, nil, false
	}
	return name, value, true
}

// parseRespHead is scanRespHead making an *http.Response of the head, its
// header canonicalized as http.ReadResponse does.
func parseRespHead(head []byte, method string) (*http.Response, bool) {
	rh, ok := scanRespHead(head, method)
	if !ok {
		return nil, false
	}
	return buildRespHead(head, rh), true
}

// buildRespHead makes an *http.Response of a head scanRespHead accepted
// (rh is what it found).
func buildRespHead(head []byte, rh respHead) *http.Response {
	s := string(head[:len(head)-2])
	eol := strings.Index(s, "\r\n")
	status := s[len("HTTP/1.1 "):eol]
	s = s[eol+2:]
	n := strings.Count(s, "\r\n")
	h := make(http.Header, n)
	vals := make([]string, n)
	for s != "" {
		eol := strings.Index(s, "\r\n")
		name, value, _ := headerField(s[:eol])
		s = s[eol+2:]
		if vv := h[name]; vv != nil {
			h[name] = append(vv, value)
		} else {
			vals[0] = value
			h[name] = vals[:1:1]
			vals = vals[1:]
		}
	}
	if rh.close {
		delete(h, "Connection") // as http.ReadResponse does
	}
	return &http.Response{
		Status: status, StatusCode: rh.code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: rh.length, Close: rh.close,
	}
}

// ambiguousFraming reports whether a head that net/http is to read (lines
// may end in LF alone) has both Content-Length and Transfer-Encoding, or a
// folded line: those are refused rather than handed to net/http, which
// would let Transfer-Encoding win and unfold lines.
func ambiguousFraming(head []byte) bool {
	_, rest, _ := bytes.Cut(head, []byte("\n"))
	cl, te := false, false
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return true
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		name = bytes.TrimRight(name, " \t")
		cl = cl || equalFold(name, "content-length")
		te = te || equalFold(name, "transfer-encoding")
	}
	return cl && te
}

// validFieldName and validFieldValue are what net/http's server requires
// of header names and values.
func validFieldName[T ~string | ~[]byte](k T) bool {
	if len(k) == 0 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte(k[i]) {
			return false
		}
	}
	return true
}

func validFieldValue[T ~string | ~[]byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerField splits one header line into its canonical name and its value
// without surrounding whitespace. ok is false for a line the fast paths do
// not take: no name, a name with a non-token byte, or a value with a control
// character other than tab.
func headerField(hl string) (name, value string, ok bool) {
	colon := strings.IndexByte(hl, ':')
	if colon <= 0 {
		return "", "", false
	}
	name, value = hl[:colon], trimOWS(hl[colon+1:])
	canon := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isTokenByte(c) {
			return "", "", false
		}
		upper := i == 0 || name[i-1] == '-'
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canon = false
		}
	}
	if !validFieldValue(value) {
		return "", "", false
	}
	if !canon {
		name = http.CanonicalHeaderKey(name)
	}
	return name, value, true
}
