package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DialConfig says how to reach etcd.
type DialConfig struct {
	// Endpoints are etcd client URLs, e.g. "http://127.0.0.1:2379". Required.
	Endpoints []string
	// DialTimeout bounds the first contact. Default 5s.
	DialTimeout time.Duration
	// CACert, Cert and Key are PEM file paths for TLS. CACert alone verifies
	// the server; Cert and Key together add a client certificate.
	CACert, Cert, Key string
	// Username and Password authenticate with etcd's auth, when enabled.
	Username, Password string
}

// Validate checks the fields against each other.
func (c DialConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("etcdstore: no etcd endpoints: %w", ErrBadConfig)
	}
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs") || u.Host == "" {
			return fmt.Errorf("etcdstore: etcd endpoint %q (want a URL like http://127.0.0.1:2379): %w", ep, ErrBadConfig)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		return fmt.Errorf("etcdstore: --cert and --key go together: %w", ErrBadConfig)
	}
	if c.Password != "" && c.Username == "" {
		return fmt.Errorf("etcdstore: a password without a user: %w", ErrBadConfig)
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("etcdstore: negative dial timeout: %w", ErrBadConfig)
	}
	return nil
}

// Dial connects to etcd and checks that it answers, so a wrong endpoint is
// reported at once, with the endpoint named, as an *UnreachableError.
func Dial(ctx context.Context, cfg DialConfig) (*clientv3.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	var tlsCfg *tls.Config
	secure := false
	for _, ep := range cfg.Endpoints {
		secure = secure || strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://")
	}
	if cfg.CACert != "" || cfg.Cert != "" || secure {
		info := transport.TLSInfo{CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcdstore: TLS files: %w", err)
		}
		tlsCfg = c
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, &UnreachableError{Endpoints: cfg.Endpoints, Err: err}
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	// Any key will do: the point is a round trip through the leader.
	if _, err := cli.Get(pctx, "/cellkit/", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if isAuth(err) {
			return nil, &AuthError{Endpoints: cfg.Endpoints, Err: err}
		}
		return nil, &UnreachableError{Endpoints: cfg.Endpoints, Err: err}
	}
	return cli, nil
}

// isAuth reports whether etcd answered with an authentication or permission
// refusal (it did answer: it is not unreachable).
func isAuth(err error) bool {
	for _, e := range []error{rpctypes.ErrAuthFailed, rpctypes.ErrPermissionDenied, rpctypes.ErrInvalidAuthToken,
		rpctypes.ErrUserEmpty, rpctypes.ErrAuthNotEnabled, rpctypes.ErrUserNotFound, rpctypes.ErrAuthOldRevision} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
