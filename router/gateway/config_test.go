package gateway

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; nil: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"local", func(c *Config) { *c = Local() }, nil},
		{"all sources", func(c *Config) {
			c.HTTP.Routes = []Route{{Prefix: "/v1/", Keys: []KeySource{{Header: "X-User-Id"}, {Query: "u"}, {Cookie: "uid"}, {Path: "/v1/*/{key}"}}}}
			c.GRPC.Methods = []MethodKey{{Method: "/pkg.Svc/", Metadata: []string{"x-account"}}, {Method: "/pkg.Svc/Get", Metadata: []string{"x-id"}}}
		}, nil},
		{"two sources in one", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Header: "A", Query: "b"}}}} },
			[]string{"http.routes[0].keys[0]: set exactly one of header, query, cookie, path (got 2)"}},
		{"no keys", func(c *Config) { c.HTTP.Routes = []Route{{Prefix: "/x"}} }, []string{"http.routes[0].keys: want at least one of header, query, cookie, path"}},
		{"empty source", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{}}}} }, []string{"(got 0)"}},
		{"bad prefix", func(c *Config) { c.HTTP.Routes = []Route{{Prefix: "v1", Keys: []KeySource{{Header: "X"}}}} }, []string{`http.routes[0].prefix "v1": want a path starting with "/"`}},
		{"duplicate prefix", func(c *Config) {
			c.HTTP.Routes = []Route{{Prefix: "/a", Keys: []KeySource{{Header: "X"}}}, {Prefix: "/a", Keys: []KeySource{{Header: "Y"}}}}
		}, []string{`http.routes[1].prefix "/a": already used by http.routes[0]`}},
		{"cellkit header", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Header: "Cellkit-Key"}}}} }, []string{"cellkit-* headers from clients are stripped"}},
		{"bad header", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Header: "X User"}}}} }, []string{"not a valid header name"}},
		{"pattern without key", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Path: "/v1/users"}}}} }, []string{"no {key} segment"}},
		{"pattern twice", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Path: "/{key}/{key}"}}}} }, []string{"{key} appears twice"}},
		{"pattern partial", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Path: "/u-{key}"}}}} }, []string{"only a whole segment"}},
		{"pattern relative", func(c *Config) { c.HTTP.Routes = []Route{{Keys: []KeySource{{Path: "{key}"}}}} }, []string{"start with"}},
		{"metadata upper", func(c *Config) { c.GRPC.Metadata = []string{"X-User"} }, []string{`grpc.metadata[0]: metadata key "X-User"`}},
		{"metadata cellkit", func(c *Config) { c.GRPC.Metadata = []string{"cellkit-key"} }, []string{"stripped"}},
		{"metadata reserved", func(c *Config) { c.GRPC.Metadata = []string{"grpc-timeout"} }, []string{"reserved"}},
		{"bad method", func(c *Config) { c.GRPC.Methods = []MethodKey{{Method: "pkg.Svc/Get", Metadata: []string{"x"}}} }, []string{`grpc.methods[0].method "pkg.Svc/Get"`}},
		{"method without keys", func(c *Config) { c.GRPC.Methods = []MethodKey{{Method: "/p.S/M"}} }, []string{"grpc.methods[0]: set exactly one of metadata and field"}},
		{"method with both", func(c *Config) { c.GRPC.Methods = []MethodKey{{Method: "/p.S/M", Metadata: []string{"x"}, Field: "1"}} }, []string{"set exactly one"}},
		{"bad field", func(c *Config) { c.GRPC.Methods = []MethodKey{{Method: "/p.S/M", Field: "1.x"}} }, []string{`grpc.methods[0].field: field "1.x"`}},
		{"field zero", func(c *Config) { c.GRPC.Methods = []MethodKey{{Method: "/p.S/M", Field: "0"}} }, []string{"field numbers"}},
		{"negative", func(c *Config) {
			c.Buffer.MaxPerSlot, c.Buffer.Timeout, c.HTTP.MaxReplayBody = -1, -1, -5
		}, []string{"buffer.maxPerSlot -1", "buffer.timeout -1ns", "http.maxReplayBody -5"}},
		{"negative client timeouts", func(c *Config) {
			c.HTTP.IdleTimeout, c.HTTP.ReadHeaderTimeout = Duration(-time.Second), Duration(-time.Millisecond)
		}, []string{"http.idleTimeout -1s: want a duration >= 0", "http.readHeaderTimeout -1ms"}},
		{"per slot over total", func(c *Config) { c.Buffer.MaxPerSlot, c.Buffer.MaxTotal = 10, 5 }, []string{"buffer.maxPerSlot 10 is more than buffer.maxTotal 5"}},
		{"timeout over drain", func(c *Config) {
			c.Buffer.Timeout, c.DrainTimeout = Duration(time.Minute), Duration(time.Second)
		}, []string{"buffer.timeout 1m0s is longer than drainTimeout 1s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{}
			tc.edit(&c)
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("got %v, want ErrBadConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	var v struct{ D Duration }
	for in, want := range map[string]time.Duration{`{"D":"250ms"}`: 250 * time.Millisecond, `{"D":1.5}`: 1500 * time.Millisecond} {
		if err := json.Unmarshal([]byte(in), &v); err != nil || v.D.D() != want {
			t.Errorf("%s: %v %v", in, v.D.D(), err)
		}
	}
	if err := json.Unmarshal([]byte(`{"D":"soon"}`), &v); err == nil || !strings.Contains(err.Error(), `"soon"`) {
		t.Errorf("bad duration: %v", err)
	}
	b, _ := json.Marshal(struct{ D Duration }{Duration(2 * time.Second)})
	if string(b) != `{"D":"2s"}` {
		t.Errorf("marshal: %s", b)
	}
}

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct{ pattern, path, want string }{
		{"/v1/*/{key}", "/v1/balance/u42", "u42"},
		{"/v1/*/{key}", "/v1/balance/u42/more", "u42"},
		{"/v1/*/{key}", "/v1/balance", ""},
		{"/v1/*/{key}", "/v2/balance/u1", ""},
		{"/users/{key}/orders", "/users/u%2F1/orders", "u/1"},
		{"/users/{key}/orders", "/users/u1/items", ""},
		{"/{key}", "/", ""},
	} {
		p, err := parsePattern(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.match(tc.path); got != tc.want {
			t.Errorf("%s on %s = %q, want %q", tc.pattern, tc.path, got, tc.want)
		}
	}
}

func TestContentSubtype(t *testing.T) {
	for ct, want := range map[string]string{"application/grpc": "proto", "application/grpc+json": "json", "application/grpc+proto;x=y": "proto", "": "proto", "application/grpc;x": "proto"} {
		md := map[string][]string{}
		if ct != "" {
			md["content-type"] = []string{ct}
		}
		if got := contentSubtype(md); got != want {
			t.Errorf("%q: %q, want %q", ct, got, want)
		}
	}
}

func TestFieldString(t *testing.T) {
	// message { string a = 1; Inner b = 3; int64 c = 2 } with Inner { string k = 1 }
	var inner, msg []byte
	inner = protowire.AppendTag(inner, 1, protowire.BytesType)
	inner = protowire.AppendString(inner, "nested")
	msg = protowire.AppendTag(msg, 2, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 99)
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, "first")
	msg = protowire.AppendTag(msg, 3, protowire.BytesType)
	msg = protowire.AppendBytes(msg, inner)
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, "last")
	for path, want := range map[string]string{"1": "last", "3.1": "nested", "2": "", "4": "", "3.2": ""} {
		p, err := parseFieldPath(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fieldString(msg, p); got != want {
			t.Errorf("field %s = %q, want %q", path, got, want)
		}
	}
	if got := fieldString([]byte{0xff}, []protowire.Number{1}); got != "" {
		t.Errorf("garbage: %q", got)
	}
}
