package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// ErrBadConfig is wrapped by every configuration problem Validate reports.
var ErrBadConfig = errors.New("bad gateway configuration")

// Duration is a time.Duration that reads and writes as a Go duration string
// ("1.5s", "250ms") in YAML and JSON. A bare number is read as seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration %s: want a string like \"1.5s\" or a number of seconds", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a Go duration like \"250ms\" or \"2s\"", s)
	}
	*d = Duration(v)
	return nil
}

// Defaults applied to zero fields of Config.
const (
	DefaultKeyHeader       = "X-Route-Key"
	DefaultKeyMetadata     = "x-route-key"
	DefaultMaxReplayBody   = 1 << 20
	DefaultReplayMessages  = 16
	DefaultReplayBytes     = 1 << 20
	DefaultMaxMessageBytes = 16 << 20
	DefaultMaxPerSlot      = 256
	DefaultMaxTotal        = 4096
	DefaultBufferTimeout   = 2 * time.Second
	DefaultRetryAfter      = time.Second
	DefaultRedirectWait    = time.Second
	DefaultDialTimeout     = 2 * time.Second
	DefaultDrainTimeout    = 15 * time.Second
	DefaultIdlePerInstance = 512
	DefaultIdleTimeout     = 2 * time.Minute
	DefaultHeaderTimeout   = 10 * time.Second
)

// Config configures a Gateway. Zero fields mean their defaults; it is what
// cmd/cellrouter reads from YAML (field names as in the json tags).
type Config struct {
	// HTTP configures the HTTP reverse proxy.
	HTTP HTTPConfig `json:"http"`
	// GRPC configures the transparent gRPC proxy.
	GRPC GRPCConfig `json:"grpc"`
	// Buffer bounds the requests held for frozen slots.
	Buffer BufferConfig `json:"buffer"`
	// RedirectWait bounds how long a request refused by a cell with
	// WRONG_CELL, FROZEN or STALE_MAP waits for the router's map to reach
	// the refusing guard's epoch before its one retry. Default 1s.
	RedirectWait Duration `json:"redirectWait,omitempty"`
	// DialTimeout bounds connecting to a cell instance. Default 2s.
	DialTimeout Duration `json:"dialTimeout,omitempty"`
	// DrainTimeout bounds the graceful drain in Serve: in-flight requests
	// still running after it are cut. Default 15s.
	DrainTimeout Duration `json:"drainTimeout,omitempty"`
}

// HTTPConfig configures the HTTP reverse proxy.
type HTTPConfig struct {
	// Routes say where the routing key of a request is, by path prefix;
	// the longest matching prefix wins. A path no route matches is
	// answered 404. Default: one route "/" keyed by the X-Route-Key header.
	Routes []Route `json:"routes,omitempty"`
	// MaxReplayBody (bytes) bounds the request bodies read into memory
	// before forwarding, so that a request refused by a cell can be
	// retried. Larger bodies are streamed and never retried. Default 1 MiB.
	// Bodies of requests held for a frozen slot are not read while held.
	MaxReplayBody int64 `json:"maxReplayBody,omitempty"`
	// MaxIdleConnsPerInstance bounds the idle keep-alive connections kept
	// to each cell instance. Default 512.
	MaxIdleConnsPerInstance int `json:"maxIdleConnsPerInstance,omitempty"`
	// StdServer serves every client connection with net/http's server.
	// By default plain HTTP/1.1 requests are served by the gateway's own
	// lean connection loop, which proxies about half again as many
	// requests per second, and only other requests (upgrades, streamed or
	// large bodies, HTTP/1.0) are handed to net/http.
	StdServer bool `json:"stdServer,omitempty"`
	// IdleTimeout closes a client connection that sends no request for
	// this long between requests. Default 2m.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// ReadHeaderTimeout bounds reading a request once its first byte came:
	// its head and, on the lean path, a body of known length that did not
	// arrive with it (slow clients are cut off). Default 10s.
	ReadHeaderTimeout Duration `json:"readHeaderTimeout,omitempty"`
}

// Route is where the routing key of the requests under one path prefix is.
type Route struct {
	// Prefix is a path prefix, starting with "/". Default "/".
	Prefix string `json:"prefix,omitempty"`
	// Keys are tried in order; the first that yields a non-empty key wins.
	// Required.
	Keys []KeySource `json:"keys"`
}

// KeySource names one place of an HTTP request that holds the key; set
// exactly one field.
type KeySource struct {
	// Header is a request header name, e.g. "X-User-Id".
	Header string `json:"header,omitempty"`
	// Query is a query parameter name, e.g. "user".
	Query string `json:"query,omitempty"`
	// Cookie is a cookie name.
	Cookie string `json:"cookie,omitempty"`
	// Path is a path pattern: "/"-separated segments, where "{key}" marks
	// the segment that is the key, "*" matches any one segment and any
	// other segment must match exactly, e.g. "/v1/users/{key}/orders".
	// Extra trailing segments of the request path are allowed.
	Path string `json:"path,omitempty"`
}

func (k KeySource) String() string {
	switch {
	case k.Header != "":
		return "header " + k.Header
	case k.Query != "":
		return "query parameter " + k.Query
	case k.Cookie != "":
		return "cookie " + k.Cookie
	case k.Path != "":
		return "path " + k.Path
	}
	return "nothing"
}

// GRPCConfig configures the transparent gRPC proxy.
type GRPCConfig struct {
	// Metadata are the metadata keys (lower case) holding the routing key,
	// tried in order. Default ["x-route-key"].
	Metadata []string `json:"metadata,omitempty"`
	// Methods override Metadata for some methods: the first entry whose
	// Method equals the full method name ("/pkg.Service/Method") or, when
	// it ends in "/", is a prefix of it ("/pkg.Service/"), wins.
	Methods []MethodKey `json:"methods,omitempty"`
	// MaxReplayMessages and MaxReplayBytes bound the request messages of a
	// call kept so that a call refused by a cell before it answered
	// anything can be retried. A call that sends more is streamed and
	// never retried. Defaults 16 messages and 1 MiB.
	MaxReplayMessages int `json:"maxReplayMessages,omitempty"`
	MaxReplayBytes    int `json:"maxReplayBytes,omitempty"`
	// MaxMessageBytes bounds one message in either direction. Default 16 MiB.
	MaxMessageBytes int `json:"maxMessageBytes,omitempty"`
}

// MethodKey says where the routing key of some methods is: in metadata,
// or in a string field of the request message (set exactly one).
type MethodKey struct {
	// Method is a full method name or a service prefix ending in "/".
	Method string `json:"method"`
	// Metadata are metadata keys tried in order.
	Metadata []string `json:"metadata,omitempty"`
	// Field is the field number of a string field of the (first) request
	// message, or a dotted path of numbers through nested messages, e.g.
	// "1" or "3.1". The router reads the wire format without the schema.
	// It must read the call's first message before routing, so a held
	// call keeps that one message in memory.
	Field string `json:"field,omitempty"`
}

// BufferConfig bounds the requests held while their slot is frozen. A
// request that finds its key frozen waits for the flip (a new map epoch
// that unfreezes it) and then goes to the new owner; one that would exceed
// a bound, or is still waiting after Timeout, is answered 503 with
// Retry-After (gRPC: Unavailable with RetryInfo).
type BufferConfig struct {
	// MaxPerSlot is the most requests held for one slot. Default 256.
	MaxPerSlot int `json:"maxPerSlot,omitempty"`
	// MaxTotal is the most requests held in all. Default 4096.
	MaxTotal int `json:"maxTotal,omitempty"`
	// Timeout is how long one request is held at most. Default 2s.
	Timeout Duration `json:"timeout,omitempty"`
	// RetryAfter is the pause suggested to a request refused for overflow
	// or timeout. Default 1s.
	RetryAfter Duration `json:"retryAfter,omitempty"`
}

// DefaultConfig returns the defaults, filled in.
func DefaultConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// Local returns a configuration for tests and development on one machine:
// short waits so that failures show quickly.
func Local() Config {
	c := DefaultConfig()
	c.Buffer.Timeout = Duration(5 * time.Second)
	c.Buffer.RetryAfter = Duration(100 * time.Millisecond)
	c.RedirectWait = Duration(2 * time.Second)
	c.DialTimeout = Duration(time.Second)
	c.DrainTimeout = Duration(5 * time.Second)
	return c
}

// SetDefaults replaces zero fields with their defaults.
func (c *Config) SetDefaults() {
	if len(c.HTTP.Routes) == 0 {
		c.HTTP.Routes = []Route{{Prefix: "/", Keys: []KeySource{{Header: DefaultKeyHeader}}}}
	}
	for i := range c.HTTP.Routes {
		if c.HTTP.Routes[i].Prefix == "" {
			c.HTTP.Routes[i].Prefix = "/"
		}
	}
	setInt64(&c.HTTP.MaxReplayBody, DefaultMaxReplayBody)
	setInt(&c.HTTP.MaxIdleConnsPerInstance, DefaultIdlePerInstance)
	setDur(&c.HTTP.IdleTimeout, DefaultIdleTimeout)
	setDur(&c.HTTP.ReadHeaderTimeout, DefaultHeaderTimeout)
	if len(c.GRPC.Metadata) == 0 {
		c.GRPC.Metadata = []string{DefaultKeyMetadata}
	}
	setInt(&c.GRPC.MaxReplayMessages, DefaultReplayMessages)
	setInt(&c.GRPC.MaxReplayBytes, DefaultReplayBytes)
	setInt(&c.GRPC.MaxMessageBytes, DefaultMaxMessageBytes)
	setInt(&c.Buffer.MaxPerSlot, DefaultMaxPerSlot)
	setInt(&c.Buffer.MaxTotal, max(DefaultMaxTotal, c.Buffer.MaxPerSlot))
	setDur(&c.Buffer.Timeout, DefaultBufferTimeout)
	setDur(&c.Buffer.RetryAfter, DefaultRetryAfter)
	setDur(&c.RedirectWait, DefaultRedirectWait)
	setDur(&c.DialTimeout, DefaultDialTimeout)
	setDur(&c.DrainTimeout, DefaultDrainTimeout)
}

func setInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

func setInt64(p *int64, d int64) {
	if *p == 0 {
		*p = d
	}
}

func setDur(p *Duration, d time.Duration) {
	if *p == 0 {
		*p = Duration(d)
	}
}

var (
	headerRe   = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)
	metadataRe = regexp.MustCompile(`^[a-z0-9_.-]+$`)
	methodRe   = regexp.MustCompile(`^/[^/\s]+/[^/\s]*$`)
)

// Validate checks the fields, with defaults applied, and reports every
// problem found, each naming its field; errors.Is(err, ErrBadConfig) holds.
func (c Config) Validate() error {
	c.SetDefaults()
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	seen := map[string]int{}
	for i, r := range c.HTTP.Routes {
		f := fmt.Sprintf("http.routes[%d]", i)
		if !strings.HasPrefix(r.Prefix, "/") {
			add("%s.prefix %q: want a path starting with \"/\"", f, r.Prefix)
		}
		if j, dup := seen[r.Prefix]; dup {
			add("%s.prefix %q: already used by http.routes[%d]", f, r.Prefix, j)
		}
		seen[r.Prefix] = i
		if len(r.Keys) == 0 {
			add("%s.keys: want at least one of header, query, cookie, path", f)
		}
		for j, k := range r.Keys {
			if err := k.check(); err != nil {
				add("%s.keys[%d]: %v", f, j, err)
			}
		}
	}
	if c.HTTP.MaxReplayBody < 0 {
		add("http.maxReplayBody %d: want bytes >= 0", c.HTTP.MaxReplayBody)
	}
	if c.HTTP.MaxIdleConnsPerInstance < 0 {
		add("http.maxIdleConnsPerInstance %d: want >= 0", c.HTTP.MaxIdleConnsPerInstance)
	}
	checkMD := func(f string, keys []string) {
		if len(keys) == 0 {
			add("%s: want at least one metadata key", f)
		}
		for j, k := range keys {
			if err := checkMetadataKey(k); err != nil {
				add("%s[%d]: %v", f, j, err)
			}
		}
	}
	checkMD("grpc.metadata", c.GRPC.Metadata)
	for i, m := range c.GRPC.Methods {
		f := fmt.Sprintf("grpc.methods[%d]", i)
		if !methodRe.MatchString(m.Method) {
			add("%s.method %q: want \"/pkg.Service/Method\" or a service prefix \"/pkg.Service/\"", f, m.Method)
		}
		switch {
		case (len(m.Metadata) == 0) == (m.Field == ""):
			add("%s: set exactly one of metadata and field", f)
		case m.Field != "":
			if _, err := parseFieldPath(m.Field); err != nil {
				add("%s.field: %v", f, err)
			}
		default:
			checkMD(f+".metadata", m.Metadata)
		}
	}
	for _, v := range []struct {
		name string
		n    int
	}{
		{"grpc.maxReplayMessages", c.GRPC.MaxReplayMessages},
		{"grpc.maxReplayBytes", c.GRPC.MaxReplayBytes},
		{"grpc.maxMessageBytes", c.GRPC.MaxMessageBytes},
		{"buffer.maxPerSlot", c.Buffer.MaxPerSlot},
		{"buffer.maxTotal", c.Buffer.MaxTotal},
	} {
		if v.n < 0 {
			add("%s %d: want >= 0", v.name, v.n)
		}
	}
	if c.Buffer.MaxPerSlot > c.Buffer.MaxTotal {
		add("buffer.maxPerSlot %d is more than buffer.maxTotal %d", c.Buffer.MaxPerSlot, c.Buffer.MaxTotal)
	}
	for _, v := range []struct {
		name string
		d    Duration
	}{
		{"buffer.timeout", c.Buffer.Timeout},
		{"buffer.retryAfter", c.Buffer.RetryAfter},
		{"redirectWait", c.RedirectWait},
		{"dialTimeout", c.DialTimeout},
		{"drainTimeout", c.DrainTimeout},
		{"http.idleTimeout", c.HTTP.IdleTimeout},
		{"http.readHeaderTimeout", c.HTTP.ReadHeaderTimeout},
	} {
		if v.d < 0 {
			add("%s %v: want a duration >= 0", v.name, v.d.D())
		}
	}
	if c.DrainTimeout > 0 && c.Buffer.Timeout > c.DrainTimeout {
		add("buffer.timeout %v is longer than drainTimeout %v: held requests could not finish during a drain", c.Buffer.Timeout.D(), c.DrainTimeout.D())
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrBadConfig, strings.Join(probs, "; "))
}

func (k KeySource) check() error {
	n := 0
	for _, s := range []string{k.Header, k.Query, k.Cookie, k.Path} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("set exactly one of header, query, cookie, path (got %d)", n)
	}
	switch {
	case k.Header != "":
		if !headerRe.MatchString(k.Header) {
			return fmt.Errorf("header %q is not a valid header name", k.Header)
		}
		if strings.HasPrefix(strings.ToLower(k.Header), "cellkit-") {
			return fmt.Errorf("header %q: cellkit-* headers from clients are stripped; use another name", k.Header)
		}
	case k.Cookie != "":
		if !headerRe.MatchString(k.Cookie) {
			return fmt.Errorf("cookie %q is not a valid cookie name", k.Cookie)
		}
	case k.Path != "":
		if _, err := parsePattern(k.Path); err != nil {
			return err
		}
	}
	return nil
}

func checkMetadataKey(k string) error {
	switch {
	case !metadataRe.MatchString(k):
		return fmt.Errorf("metadata key %q: want lower case a-z 0-9 _ . -", k)
	case strings.HasPrefix(k, "cellkit-"):
		return fmt.Errorf("metadata key %q: cellkit-* metadata from clients is stripped; use another key", k)
	case strings.HasPrefix(k, "grpc-") || strings.HasSuffix(k, "-bin"):
		return fmt.Errorf("metadata key %q: grpc-* keys are reserved and -bin keys are binary", k)
	}
	return nil
}

// canonicalHeader returns the canonical form of a header name.
func canonicalHeader(h string) string { return http.CanonicalHeaderKey(h) }
