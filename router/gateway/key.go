package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// pattern is a compiled KeySource.Path.
type pattern struct {
	segs []string // "" at the key's index
	key  int
}

func parsePattern(p string) (pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return pattern{}, fmt.Errorf("path pattern %q: want it to start with \"/\"", p)
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	pt := pattern{segs: segs, key: -1}
	for i, s := range segs {
		switch {
		case s == "{key}":
			if pt.key >= 0 {
				return pattern{}, fmt.Errorf("path pattern %q: {key} appears twice", p)
			}
			pt.key = i
			segs[i] = ""
		case s == "":
			return pattern{}, fmt.Errorf("path pattern %q: empty segment", p)
		case strings.ContainsAny(s, "{}"):
			return pattern{}, fmt.Errorf("path pattern %q: segment %q: only a whole segment {key} is a placeholder", p, s)
		}
	}
	if pt.key < 0 {
		return pattern{}, fmt.Errorf("path pattern %q: no {key} segment", p)
	}
	return pt, nil
}

// match returns the key segment of path (escaped form), or "".
func (pt pattern) match(path string) string {
	path = strings.TrimPrefix(path, "/")
	var key string
	for i, want := range pt.segs {
		if path == "" && i > 0 {
			return ""
		}
		seg, rest, _ := strings.Cut(path, "/")
		switch {
		case i == pt.key:
			key = seg
		case want != "*" && want != seg:
			return ""
		}
		path = rest
	}
	if k, err := url.PathUnescape(key); err == nil {
		return k
	}
	return ""
}

// extractor finds the key of an HTTP request from one source.
type extractor struct {
	src    KeySource
	header string // canonical
	pat    pattern
}

func (e *extractor) key(r *http.Request) string {
	switch {
	case e.header != "":
		return firstValue(r.Header, e.header) // canonical already
	case e.src.Query != "":
		if r.URL.RawQuery == "" {
			return ""
		}
		return r.URL.Query().Get(e.src.Query)
	case e.src.Cookie != "":
		if c, err := r.Cookie(e.src.Cookie); err == nil {
			return c.Value
		}
		return ""
	default:
		return e.pat.match(r.URL.EscapedPath())
	}
}

// httpRoute is a compiled Route.
type httpRoute struct {
	prefix string
	keys   []extractor
	want   string // "header X-User-Id, query parameter user"
}

func (rt *httpRoute) key(r *http.Request) string {
	for i := range rt.keys {
		if k := rt.keys[i].key(r); k != "" {
			return k
		}
	}
	return ""
}

func compileRoutes(routes []Route) ([]*httpRoute, error) {
	out := make([]*httpRoute, 0, len(routes))
	for _, r := range routes {
		rt := &httpRoute{prefix: r.Prefix}
		var want []string
		for _, k := range r.Keys {
			e := extractor{src: k}
			if k.Header != "" {
				e.header = canonicalHeader(k.Header)
			}
			if k.Path != "" {
				pt, err := parsePattern(k.Path)
				if err != nil {
					return nil, errors.Join(ErrBadConfig, err)
				}
				e.pat = pt
			}
			rt.keys = append(rt.keys, e)
			want = append(want, k.String())
		}
		rt.want = strings.Join(want, ", ")
		out = append(out, rt)
	}
	// Longest prefix first.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].prefix) > len(out[j].prefix) })
	return out, nil
}

func matchRoute(routes []*httpRoute, path string) *httpRoute {
	for _, rt := range routes {
		if strings.HasPrefix(path, rt.prefix) {
			return rt
		}
	}
	return nil
}

// grpcKeys finds the key of a gRPC call: in its metadata, or in a field of
// its first request message.
type grpcKeys struct {
	def     []string
	methods []methodKey
}

type methodKey struct {
	MethodKey
	field []protowire.Number
}

func compileMethods(ms []MethodKey) ([]methodKey, error) {
	out := make([]methodKey, 0, len(ms))
	for _, m := range ms {
		mk := methodKey{MethodKey: m}
		if m.Field != "" {
			f, err := parseFieldPath(m.Field)
			if err != nil {
				return nil, errors.Join(ErrBadConfig, err)
			}
			mk.field = f
		}
		out = append(out, mk)
	}
	return out, nil
}

// forMethod returns the metadata keys, or the field path, for method.
func (g *grpcKeys) forMethod(method string) (md []string, field []protowire.Number, desc string) {
	for _, m := range g.methods {
		if m.Method == method || (strings.HasSuffix(m.Method, "/") && strings.HasPrefix(method, m.Method)) {
			if m.field != nil {
				return nil, m.field, "request field " + m.Field
			}
			return m.Metadata, nil, "metadata " + strings.Join(m.Metadata, ", ")
		}
	}
	return g.def, nil, "metadata " + strings.Join(g.def, ", ")
}

func mdKey(keys []string, md metadata.MD) string {
	for _, k := range keys {
		if v := md[k]; len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return ""
}

func parseFieldPath(s string) ([]protowire.Number, error) {
	var out []protowire.Number
	for p := range strings.SplitSeq(s, ".") {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil || n == 0 || protowire.Number(n) > protowire.MaxValidNumber {
			return nil, fmt.Errorf("field %q: want field numbers (1 to %d) separated by dots, e.g. \"1\" or \"3.1\"", s, protowire.MaxValidNumber)
		}
		out = append(out, protowire.Number(n))
	}
	return out, nil
}

// fieldString reads the string (or bytes) field at path from a protobuf
// message in wire format; the last occurrence wins, as in proto3.
func fieldString(b []byte, path []protowire.Number) string {
	var found []byte
	ok := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == path[0] && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return ""
			}
			found, ok = v, true
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return ""
		}
		b = b[m:]
	}
	if !ok {
		return ""
	}
	if len(path) > 1 {
		return fieldString(found, path[1:])
	}
	return string(found)
}
