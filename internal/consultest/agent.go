package consultest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

const (
	// agentReadyTimeout bounds the wait for a started agent to be ready.
	agentReadyTimeout = 30 * time.Second
	// startAttempts bounds the starts retried because a port was taken.
	startAttempts = 5
)

// Agent is a running Consul agent: a -dev agent from StartAgent, or a member
// of a Cluster. Its addresses stay the same across Stop and Restart.
type Agent struct {
	// HTTPAddr is the HTTP API address, "127.0.0.1:PORT".
	HTTPAddr string
	// DNSAddr is the DNS address (UDP and TCP), "127.0.0.1:PORT".
	DNSAddr string
	// DNSPort is the port of DNSAddr.
	DNSPort int
	// Client speaks to HTTPAddr. It has no timeout of its own, so that
	// blocking queries work; bound calls with a context where that matters.
	Client *api.Client
	// Node is the agent's node name, unique on this machine.
	Node string
	// LogPath is the file that holds the agent's output, every run appended.
	LogPath string

	bin          string
	args         []string
	source       string // the helper clients' local address; empty: any
	readyTimeout time.Duration
	probe        *api.Client         // like Client, with a short timeout for polling
	clientHooks  []func(*api.Config) // change the helper clients (acl.go, tls.go)

	mu   sync.Mutex
	proc *process // nil before the first start
}

// Option changes how StartAgent starts the agent.
type Option func(*agentConfig)

type agentConfig struct {
	bind   string
	source string
	extra  []string
	// Hooks of the options in acl.go and tls.go: flags that depend on the
	// HTTP port chosen, and changes to the helper clients' configuration.
	portArgs []func(httpPort int) []string
	client   []func(*api.Config)
}

// WithHelperSource makes the agent's Client, and the polling of the wait
// helpers, connect from ip, another loopback address such as "127.0.0.2". An
// agent limits concurrent connections per client IP
// (limits.http_max_conns_per_client): a test of that limit keeps its own
// connections out of the count of the code under test, which connects from
// 127.0.0.1.
func WithHelperSource(ip string) Option {
	return func(c *agentConfig) { c.source = ip }
}

// WithArgs adds flags to the agent's command line, after those StartAgent
// sets (a later flag wins for single-valued settings).
func WithArgs(args ...string) Option {
	return func(c *agentConfig) { c.extra = append(c.extra, args...) }
}

// WithBind binds every listener of the agent to ip, another loopback address
// such as "127.0.0.2", instead of 127.0.0.1.
func WithBind(ip string) Option {
	return func(c *agentConfig) { c.bind = ip }
}

// StartAgent starts a -dev agent on free loopback ports and waits until it
// has elected itself leader and its own node is in the catalog. It is stopped
// on t.Cleanup. A -dev agent keeps nothing on disk: Restart forgets every
// service registered through the API.
func StartAgent(t testing.TB, opts ...Option) *Agent {
	t.Helper()
	cfg := agentConfig{bind: "127.0.0.1"}
	for _, o := range opts {
		o(&cfg)
	}
	if !isLoopback(cfg.bind) {
		t.Fatalf("consultest: WithBind(%q): not a loopback IP address", cfg.bind)
	}
	if cfg.source != "" && !isLoopback(cfg.source) {
		t.Fatalf("consultest: WithHelperSource(%q): not a loopback IP address", cfg.source)
	}
	a := &Agent{
		Node:         uniqueNodeName(),
		LogPath:      filepath.Join(t.TempDir(), "consul.log"),
		bin:          Binary(t),
		readyTimeout: agentReadyTimeout,
	}
	t.Cleanup(func() { a.cleanup(t) })

	began := time.Now()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var ports []int
		ports, err = freePorts(cfg.bind, 5)
		if err != nil {
			t.Fatalf("consultest: %v", err)
		}
		httpPort, dnsPort, serfLAN, serfWAN, server := ports[0], ports[1], ports[2], ports[3], ports[4]
		args := []string{
			"-dev",
			"-node", a.Node,
			"-client", cfg.bind,
			"-bind", cfg.bind,
			"-http-port", strconv.Itoa(httpPort),
			"-dns-port", strconv.Itoa(dnsPort),
			"-serf-lan-port", strconv.Itoa(serfLAN),
			"-serf-wan-port", strconv.Itoa(serfWAN),
			"-server-port", strconv.Itoa(server),
			// A server opens gRPC-TLS on 8503 unless told otherwise, which
			// would collide between agents running in parallel.
			"-grpc-port", "-1",
			"-grpc-tls-port", "-1",
			"-hcl", "disable_update_check = true",
			"-log-level", "warn",
		}
		for _, f := range cfg.portArgs {
			args = append(args, f(httpPort)...)
		}
		a.source, a.clientHooks = cfg.source, cfg.client
		a.setAddrs(cfg.bind, httpPort, dnsPort, append(args, cfg.extra...))
		if err = a.start(); err == nil {
			t.Logf("consultest: agent %s ready at http://%s (dns %s) in %s, log %s",
				a.Node, a.HTTPAddr, a.DNSAddr, time.Since(began).Round(time.Millisecond), a.LogPath)
			return a
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("consultest: start agent %s: %v", a.Node, err)
	return nil
}

// isLoopback reports whether s is a loopback IP address: tests talk to
// nothing else.
func isLoopback(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.IsLoopback()
}

// setAddrs fixes the agent's addresses and command line.
func (a *Agent) setAddrs(ip string, httpPort, dnsPort int, args []string) {
	a.HTTPAddr = net.JoinHostPort(ip, strconv.Itoa(httpPort))
	a.DNSAddr = net.JoinHostPort(ip, strconv.Itoa(dnsPort))
	a.DNSPort = dnsPort
	a.args = args
	a.Client = newClient(a.HTTPAddr, a.source, 0, a.clientHooks...)
	a.probe = newClient(a.HTTPAddr, a.source, 2*time.Second, a.clientHooks...)
}

// newClient returns an API client for addr that connects from source (empty:
// the system's choice). A zero timeout means none.
func newClient(addr, source string, timeout time.Duration, hooks ...func(*api.Config)) *api.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if source != "" {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		transport.DialContext = dialer.DialContext
	}
	// Built from scratch rather than from api.DefaultConfig so that the
	// CONSUL_HTTP_* variables a test sets for the code under test (a token,
	// TLS) do not leak into the helper's own client.
	conf := &api.Config{
		Address: addr,
		Scheme:  "http",
		HttpClient: &http.Client{
			Transport: transport,
			Timeout:   timeout,
		},
	}
	for _, h := range hooks {
		h(conf)
	}
	c, err := api.NewClient(conf)
	if err != nil {
		panic("consultest: api client: " + err.Error()) // cannot happen for an http(s) address
	}
	return c
}

var nodeSeq atomic.Int64

// uniqueNodeName returns a node name no other agent on this machine uses.
func uniqueNodeName() string {
	return fmt.Sprintf("ct-%d-%d", os.Getpid(), nodeSeq.Add(1))
}

// start runs the agent and waits until it is ready.
func (a *Agent) start() error {
	if err := a.spawn(); err != nil {
		return err
	}
	return a.waitReady(a.readyTimeout)
}

// spawn starts the agent's process without waiting for it to be ready.
func (a *Agent) spawn() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil && !a.proc.exited() {
		return fmt.Errorf("agent %s is already running (pid %d)", a.Node, a.proc.pid())
	}
	p, err := startProcess(a.bin, a.args, a.LogPath)
	if err != nil {
		return err
	}
	a.proc = p
	return nil
}

// waitReady polls until the agent knows a leader and finds its own node in
// the catalog. If the agent exits or the time runs out, it is stopped and the
// error carries the last lines of its log.
func (a *Agent) waitReady(timeout time.Duration) error {
	p := a.current()
	ok, state := poll(timeout, func() (bool, string) {
		if p.exited() {
			return true, ""
		}
		return a.ready()
	})
	if p.exited() {
		return p.exitError()
	}
	if !ok {
		_ = p.stop()
		return fmt.Errorf("agent %s not ready after %s (last state: %s); last lines of %s:\n%s",
			a.Node, timeout, state, a.LogPath, logTail(a.LogPath, 15))
	}
	return nil
}

// ready reports whether the agent knows a leader and has its node in the catalog.
func (a *Agent) ready() (bool, string) {
	leader, err := a.probe.Status().Leader()
	if err != nil {
		return false, "leader: " + err.Error()
	}
	if leader == "" {
		return false, "no leader yet"
	}
	node, _, err := a.probe.Catalog().Node(a.Node, nil)
	if err != nil {
		return false, "catalog: " + err.Error()
	}
	if node == nil || node.Node == nil {
		return false, "leader " + leader + ", node " + a.Node + " not in the catalog yet"
	}
	return true, "leader " + leader
}

func (a *Agent) current() *process {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc
}

// Running reports whether the agent's process is running.
func (a *Agent) Running() bool {
	p := a.current()
	return p != nil && !p.exited()
}

// PID returns the agent's process ID, or 0 if it is not running.
func (a *Agent) PID() int {
	p := a.current()
	if p == nil || p.exited() {
		return 0
	}
	return p.pid()
}

// Stop stops the agent (SIGTERM, then SIGKILL after a bound) and waits for it
// to exit. Stopping a stopped agent does nothing.
func (a *Agent) Stop(t testing.TB) {
	t.Helper()
	if err := a.stop(); err != nil {
		t.Fatalf("consultest: stop agent %s: %v", a.Node, err)
	}
}

func (a *Agent) stop() error {
	p := a.current()
	if p == nil {
		return nil
	}
	return p.stop()
}

func (a *Agent) cleanup(t testing.TB) {
	if err := a.stop(); err != nil {
		t.Errorf("consultest: stop agent %s: %v", a.Node, err)
	}
}

// Restart stops the agent if it runs and starts it again on the same
// addresses, then waits until it is ready. A -dev agent comes back empty; a
// cluster agent keeps its data directory.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop(t)
	began := time.Now()
	var err error
	for attempt := 1; attempt <= 2*startAttempts; attempt++ {
		if err = a.start(); err == nil {
			t.Logf("consultest: agent %s restarted in %s", a.Node, time.Since(began).Round(time.Millisecond))
			return
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
		// Someone took one of the agent's ports while it was down; it
		// may be a short-lived socket, so give it a moment.
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	t.Fatalf("consultest: restart agent %s on %s: %v", a.Node, a.HTTPAddr, err)
}
