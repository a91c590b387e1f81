package etcdembed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults and limits for ClusterConfig.
const (
	DefaultMembers = 3
	MaxMembers     = 7
)

// layoutFile is the file in ClusterConfig.Dir that records the members'
// names and addresses (see layout).
const layoutFile = "cluster.json"

// How often Leader and StartCluster look at the members while waiting for
// a leader.
const leaderPollInterval = 10 * time.Millisecond

// relayDialTimeout bounds a peer relay's dial of its member on loopback.
const relayDialTimeout = time.Second

// relayAcceptBackoff is the pause after a failed accept (e.g. EMFILE).
const relayAcceptBackoff = 10 * time.Millisecond

// ErrNoLeader is returned by Leader when no running member is followed by a
// majority of the cluster's members.
var ErrNoLeader = errors.New("etcdembed: no leader")

// ClusterConfig configures an embedded etcd cluster of several members in
// one process, for tests and drills of failover and quorum loss. The zero
// value of every field except Dir means "use the default".
type ClusterConfig struct {
	// Dir is the cluster's directory. Required; created with mode 0700 if
	// missing. Member i keeps its data in Dir/m<i>, and Dir/cluster.json
	// records the members' addresses. A Dir that already holds a cluster
	// is reused: its members restart from their data on the addresses
	// recorded, since etcd keeps the peer URLs in its membership.
	Dir string

	// Members is the number of members, 1 to 7. Default 3, or the number
	// recorded in Dir. An odd number is best: 4 members tolerate one
	// failure, as 3 do.
	Members int

	// Host is the IP literal or "localhost" that every member listens on,
	// for clients and peers. Default "127.0.0.1". Ports are picked free
	// when the cluster is first started and kept from then on, across
	// Stop and Start and when Dir is started again.
	Host string

	// LogLevel is the level of each member's etcd logger, as in Config.
	// Default "error".
	LogLevel string

	// StartTimeout bounds how long StartCluster waits for every member to
	// serve and a leader to be elected, and how long Start waits for a
	// member, in addition to the caller's context. Default 30s.
	StartTimeout time.Duration
}

// DefaultClusterConfig returns a three-member cluster in dir on free
// loopback ports, logging errors only.
func DefaultClusterConfig(dir string) ClusterConfig {
	return ClusterConfig{
		Dir:          dir,
		Members:      DefaultMembers,
		Host:         DefaultHost,
		LogLevel:     DefaultLogLevel,
		StartTimeout: DefaultStartTimeout,
	}
}

// withDefaults returns c with zero fields replaced by their defaults, except
// Members, whose default depends on what Dir holds.
func (c ClusterConfig) withDefaults() ClusterConfig {
	d := DefaultClusterConfig(c.Dir)
	if c.Host == "" {
		c.Host = d.Host
	}
	if c.LogLevel == "" {
		c.LogLevel = d.LogLevel
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	return c
}

// Validate reports the first problem with c, wrapped around ErrInvalidConfig.
// Zero fields are valid (they mean the default) except Dir.
func (c ClusterConfig) Validate() error {
	c = c.withDefaults()
	if c.Dir == "" {
		return invalid("Dir is required")
	}
	if c.Members < 0 || c.Members > MaxMembers {
		return invalid("Members %d: want 1..%d", c.Members, MaxMembers)
	}
	if err := checkAddr(net.JoinHostPort(c.Host, "0")); err != nil {
		return invalid("Host: %v", err)
	}
	// The member's own checks cover LogLevel and StartTimeout.
	m := Config{Dir: c.Dir, LogLevel: c.LogLevel, StartTimeout: c.StartTimeout}
	return m.Validate()
}

// layout is what Dir/cluster.json records: who the members are and where
// they listen. It is written before the members first start and never
// changed after, since etcd records the peer URLs in its membership.
type layout struct {
	Token   string         `json:"token"`
	Members []layoutMember `json:"members"`
}

type layoutMember struct {
	Name   string `json:"name"`
	Client string `json:"client"` // listen host:port
	Peer   string `json:"peer"`   // the peer relay's host:port, advertised
}

// Cluster is a running embedded etcd cluster. Its methods are safe for
// concurrent use; Stop and Start of one member wait for each other.
//
// Members are numbered from 0 to Size()-1. Methods taking a member index
// panic if it is out of range, as a slice would.
//
// Peers reach each member through a relay of ours on its advertised peer
// address, which cuts the member's peer connections when it stops. etcd
// itself leaves them open for up to its 5s peer read timeout after it stops
// (its HTTP shutdown gives up after a second), so without the relay their
// goroutines would outlive Stop and Close, and a stopped member would not
// look stopped to its peers at once.
type Cluster struct {
	members []*Server    // fixed at StartCluster
	relays  []*peerRelay // relays[i] serves members[i]

	mu     sync.Mutex
	closed bool
}

// StartCluster starts every member of the cluster described by cfg at once
// (each waits for a quorum of the others) and returns when all of them
// serve clients and a leader is elected. ctx bounds only the start; call
// Close to stop the cluster.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	if err := prepareDir(cfg.Dir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	lay, err := readLayout(cfg)
	if err != nil {
		return nil, err
	}
	fresh := lay == nil
	if fresh {
		if err := checkNoMembers(cfg); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		if fresh {
			if lay, err = newLayout(cfg); err != nil {
				return nil, err
			}
			if err := writeLayout(cfg.Dir, lay); err != nil {
				return nil, err
			}
		}
		c, err := startMembers(ctx, cfg, lay)
		if err == nil {
			if _, err = c.Leader(ctx); err == nil {
				return c, nil
			}
			c.Close()
			return nil, startTimeout(cfg.StartTimeout, err)
		}
		// Another process may take a picked free port before we bind it.
		// The members' own peer ports are picked afresh on every attempt;
		// a new cluster can start over on other addresses too, since its
		// members hold nothing yet.
		if attempt < 3 && errors.Is(err, syscall.EADDRINUSE) {
			if fresh {
				if err := removeMembers(cfg.Dir, lay); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// startMembers starts every member, and its relay, concurrently. If one
// fails the others are stopped, and the first failure is returned.
func startMembers(ctx context.Context, cfg ClusterConfig, lay *layout) (*Cluster, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	n := len(lay.Members)
	c := &Cluster{members: make([]*Server, n), relays: make([]*peerRelay, n)}
	// Each member's etcd listens for peers on a port of its own behind
	// its relay; etcd records only the advertised (relay) URLs.
	ports, err := freePorts(cfg.Host, n, lay.ports())
	if err != nil {
		return nil, err
	}
	peers := make([]string, n)
	for i, m := range lay.Members {
		peers[i] = m.Name + "=" + (&url.URL{Scheme: "http", Host: advertiseAddr(m.Peer)}).String()
		backend := net.JoinHostPort(cfg.Host, strconv.Itoa(ports[i]))
		if c.relays[i], err = listenPeerRelay(m.Peer, advertiseAddr(backend)); err != nil {
			c.closeRelays()
			return nil, fmt.Errorf("member %s: %w", m.Name, err)
		}
	}
	initial := strings.Join(peers, ",")

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i, m := range lay.Members {
		mcfg := Config{
			Dir:                 filepath.Join(cfg.Dir, m.Name),
			Name:                m.Name,
			ClientAddr:          m.Client,
			PeerAddr:            net.JoinHostPort(cfg.Host, strconv.Itoa(ports[i])),
			LogLevel:            cfg.LogLevel,
			StartTimeout:        cfg.StartTimeout,
			InitialCluster:      initial,
			InitialClusterToken: lay.Token,
		}
		wg.Go(func() {
			s, err := startServer(ctx, mcfg, advertiseAddr(m.Peer))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					// The others wait for a quorum that will not come.
					firstErr = fmt.Errorf("member %s: %w", m.Name, err)
					cancel()
				}
				return
			}
			c.members[i] = s
		})
	}
	wg.Wait()
	if firstErr != nil {
		for _, s := range c.members {
			if s != nil {
				s.Close()
			}
		}
		c.closeRelays()
		return nil, firstErr
	}
	return c, nil
}

func startTimeout(limit time.Duration, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (StartTimeout %s or the caller's deadline): %w", ErrStartTimeout, limit, err)
	}
	return fmt.Errorf("etcdembed: start: %w", err)
}

// Size returns the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints returns every member's client URL, in member order, for
// clientv3.Config.Endpoints. They stay the same while members stop and
// start.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, s := range c.members {
		eps[i] = s.ClientURL()
	}
	return eps
}

// Member returns member i, for its name and URLs. Closing or restarting it
// directly works too; a member closed so cannot be started by Start.
func (c *Cluster) Member(i int) *Server { return c.members[i] }

// Running reports whether member i serves. A member being started does not
// serve yet; a member being stopped no longer does.
func (c *Cluster) Running(i int) bool { return c.members[i].running() }

// Stop stops member i abruptly, as a crash would, and returns once it has
// stopped, its peer connections are cut and its ports are released. A
// leader does not hand leadership over: the others elect a new one after
// etcd's election timeout (1s to 2s). The member keeps its data directory,
// so Start brings it back. Stopping a stopped member does nothing.
// (Member(i).Restart stops a member gracefully, handing leadership over,
// and starts it again.)
func (c *Cluster) Stop(i int) error {
	// Cut the network first: etcd's shutdown then finds no peer
	// connection to wait for.
	c.relays[i].setDown(true)
	c.members[i].kill(false)
	return nil
}

// Start starts stopped member i again from its data directory, on its
// addresses, and returns once it has rejoined the cluster and serves
// clients. That needs a quorum: with too few other members running, Start
// waits for them until ctx is done or StartTimeout has passed. Starting a
// running member does nothing. After Close, Start returns ErrClosed.
func (c *Cluster) Start(ctx context.Context, i int) error {
	s := c.members[i]
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	c.relays[i].setDown(false)
	return s.resume(ctx)
}

// Leader returns the index of the leader: the running member that a
// majority of all members follow, as each running member reports in its
// Maintenance.Status (read in process, not over the network). During an
// election, or while quorum is lost, there is none: Leader waits for one
// until ctx is done, then returns an error wrapping ErrNoLeader and
// ctx.Err().
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	if i, ok := c.leader(); ok {
		return i, nil
	}
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-t.C:
			if i, ok := c.leader(); ok {
				return i, nil
			}
		}
	}
}

func (c *Cluster) leader() (int, bool) {
	index := make(map[uint64]int, len(c.members))
	follows := make(map[uint64]int, len(c.members))
	for i, s := range c.members {
		id, lead, ok := s.raftStatus()
		if !ok {
			continue
		}
		index[id] = i
		if lead != 0 {
			follows[lead]++
		}
	}
	for lead, n := range follows {
		if i, ok := index[lead]; ok && n > len(c.members)/2 {
			return i, true
		}
	}
	return -1, false
}

// Close stops every member at once, as Stop does, and returns once all have
// stopped, their peer connections are cut and their ports are released. The
// members keep their data: StartCluster on the same Dir starts them again.
// Closing again is a no-op.
func (c *Cluster) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()

	var wg sync.WaitGroup
	for i, s := range c.members {
		wg.Go(func() {
			c.relays[i].setDown(true)
			s.kill(true)
		})
	}
	wg.Wait()
	c.closeRelays()
	return nil
}

func (c *Cluster) closeRelays() {
	for _, r := range c.relays {
		if r != nil {
			r.close()
		}
	}
}

// newLayout names the members and picks free ports for them.
func newLayout(cfg ClusterConfig) (*layout, error) {
	n := cfg.Members
	if n == 0 {
		n = DefaultMembers
	}
	token := make([]byte, 8)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("etcdembed: cluster token: %w", err)
	}
	ports, err := freePorts(cfg.Host, 2*n, nil)
	if err != nil {
		return nil, err
	}
	lay := &layout{Token: "cellkit-" + hex.EncodeToString(token)}
	for i := range n {
		lay.Members = append(lay.Members, layoutMember{
			Name:   "m" + strconv.Itoa(i),
			Client: net.JoinHostPort(cfg.Host, strconv.Itoa(ports[2*i])),
			Peer:   net.JoinHostPort(cfg.Host, strconv.Itoa(ports[2*i+1])),
		})
	}
	return lay, nil
}

// freePorts returns n distinct free ports on host, none of them in avoid.
// All are held open until all are picked, so that the kernel does not hand
// out one twice.
func freePorts(host string, n int, avoid map[int]bool) ([]int, error) {
	addr := net.JoinHostPort(host, "0")
	ports := make([]int, 0, n)
	for len(ports) < n {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, &ListenError{Role: "peer", Addr: addr, Err: err}
		}
		defer l.Close()
		if p := l.Addr().(*net.TCPAddr).Port; !avoid[p] {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// ports returns the ports that lay's members listen on.
func (lay *layout) ports() map[int]bool {
	ports := make(map[int]bool, 2*len(lay.Members))
	for _, m := range lay.Members {
		for _, addr := range []string{m.Client, m.Peer} {
			if p, err := strconv.Atoi(addrPort(addr)); err == nil {
				ports[p] = true
			}
		}
	}
	return ports
}

// readLayout returns the layout recorded in cfg.Dir, or nil if there is
// none, after checking it against cfg.
func readLayout(cfg ClusterConfig) (*layout, error) {
	path := filepath.Join(cfg.Dir, layoutFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &DataDirError{Path: path, Err: err}
	}
	var lay layout
	if err := json.Unmarshal(b, &lay); err != nil {
		return nil, &DataDirError{Path: path, Err: err}
	}
	if len(lay.Members) == 0 || len(lay.Members) > MaxMembers {
		return nil, &DataDirError{Path: path, Err: fmt.Errorf("records %d members, want 1..%d", len(lay.Members), MaxMembers)}
	}
	if cfg.Members != 0 && cfg.Members != len(lay.Members) {
		return nil, invalid("Members %d: %s holds a cluster of %d", cfg.Members, cfg.Dir, len(lay.Members))
	}
	for _, m := range lay.Members {
		if err := checkAddr(m.Client); err != nil {
			return nil, &DataDirError{Path: path, Err: fmt.Errorf("member %s client: %w", m.Name, err)}
		}
		if err := checkAddr(m.Peer); err != nil {
			return nil, &DataDirError{Path: path, Err: fmt.Errorf("member %s peer: %w", m.Name, err)}
		}
		if host, _, _ := net.SplitHostPort(m.Client); !sameAddr(net.JoinHostPort(host, "0"), net.JoinHostPort(cfg.Host, "0")) {
			return nil, invalid("Host %s: %s holds a cluster on %s", cfg.Host, cfg.Dir, host)
		}
	}
	return &lay, nil
}

// writeLayout records lay in dir, replacing the file whole.
func writeLayout(dir string, lay *layout) error {
	path := filepath.Join(dir, layoutFile)
	b, err := json.MarshalIndent(lay, "", "\t")
	if err != nil {
		return fmt.Errorf("etcdembed: %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, layoutFile+".*")
	if err != nil {
		return &DataDirError{Path: dir, Err: err}
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return &DataDirError{Path: path, Err: err}
	}
	return nil
}

// checkNoMembers refuses a Dir without a layout whose member directories
// hold data: their peer addresses are unknown, so they cannot be started,
// and they are not ours to remove.
func checkNoMembers(cfg ClusterConfig) error {
	for i := range MaxMembers {
		dir := filepath.Join(cfg.Dir, "m"+strconv.Itoa(i))
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return &DataDirError{Path: dir, Err: err}
		}
		if len(entries) > 0 {
			return &DataDirError{Path: dir, Err: fmt.Errorf("holds data but %s has no %s", cfg.Dir, layoutFile)}
		}
	}
	return nil
}

// removeMembers removes the data of a new cluster that failed to start.
func removeMembers(dir string, lay *layout) error {
	for _, m := range lay.Members {
		path := filepath.Join(dir, m.Name)
		if err := os.RemoveAll(path); err != nil {
			return &DataDirError{Path: path, Err: err}
		}
	}
	return nil
}

// peerRelay listens on a member's advertised peer address and relays each
// connection to the member's etcd, so that it can cut them all when the
// member stops (see Cluster). While it is down, or the member is stopped, a
// peer's connection is accepted and closed at once.
type peerRelay struct {
	l       net.Listener
	backend string // etcd's peer listen address

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // both ends of every relayed connection
	down   bool
	closed bool
	wg     sync.WaitGroup // the accept loop and every relay goroutine
}

func listenPeerRelay(addr, backend string) (*peerRelay, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Role: "peer", Addr: addr, Err: err}
	}
	r := &peerRelay{l: l, backend: backend, conns: make(map[net.Conn]struct{})}
	r.wg.Go(r.serve)
	return r, nil
}

func (r *peerRelay) serve() {
	for {
		in, err := r.l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(relayAcceptBackoff)
			continue
		}
		if r.track(in) {
			r.wg.Go(func() { r.relay(in) })
		}
	}
}

// relay copies between in and a new connection to etcd until either side
// ends or the relay cuts them.
func (r *peerRelay) relay(in net.Conn) {
	defer r.untrack(in)
	out, err := net.DialTimeout("tcp", r.backend, relayDialTimeout)
	if err != nil {
		return // the member is stopped
	}
	if !r.track(out) {
		return
	}
	defer r.untrack(out)
	r.wg.Go(func() {
		io.Copy(out, in)
		out.Close()
		in.Close()
	})
	io.Copy(in, out)
	in.Close()
	out.Close()
}

// track registers c so that setDown and close close it. If the relay is
// down or closed it closes c and returns false.
func (r *peerRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down || r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *peerRelay) untrack(c net.Conn) {
	c.Close()
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// setDown cuts every relayed connection and refuses new ones until it is
// called with false.
func (r *peerRelay) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
	if down {
		r.cutLocked()
	}
}

func (r *peerRelay) cutLocked() {
	for c := range r.conns {
		c.Close()
	}
}

// close stops listening, cuts every connection and waits for the relay's
// goroutines to end. Closing again is a no-op.
func (r *peerRelay) close() {
	r.mu.Lock()
	r.closed = true
	r.cutLocked()
	r.mu.Unlock()
	r.l.Close()
	r.wg.Wait()
}
