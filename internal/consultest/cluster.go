package consultest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterReadyTimeout bounds the wait for a cluster, or one of its agents
// started again, to be ready.
const clusterReadyTimeout = 60 * time.Second

// Consul's default ports, which every cluster agent uses on its own address.
const (
	serverPort  = 8300
	serfLANPort = 8301
	serfWANPort = 8302
	httpPort    = 8500
	dnsPort     = 8600
)

// Cluster is a small real Consul cluster on loopback: each agent has its own
// address 127.A.B.x, where A.B is chosen at random per cluster so that
// clusters of tests running in parallel do not meet, and Consul's default
// ports. Every agent keeps a data directory, so a stopped agent started again
// remembers its state.
type Cluster struct {
	// Agents holds the servers first (0 to Servers-1), then the clients.
	Agents []*Agent
	// Servers and Clients count the agents of each kind.
	Servers, Clients int

	serverAddrs map[string]int // "IP:8300" → index in Agents
}

// StartCluster starts servers server agents (-server -bootstrap-expect
// servers) and clients client agents that join them, and waits until a
// leader is elected, every agent sees every member alive and every node is in
// the catalog. All agents are stopped on t.Cleanup.
func StartCluster(t testing.TB, servers, clients int) *Cluster {
	t.Helper()
	total := servers + clients
	if servers < 1 || clients < 0 || total > 250 {
		t.Fatalf("consultest: StartCluster(%d servers, %d clients): want 1+ servers and at most 250 agents", servers, clients)
	}
	bin := Binary(t)
	c := &Cluster{Servers: servers, Clients: clients}
	dataDirs := make([]string, total)
	for i := range total {
		dir := t.TempDir()
		dataDirs[i] = filepath.Join(dir, "data") // the agent creates it
		role := "server"
		if i >= servers {
			role = "client"
		}
		c.Agents = append(c.Agents, &Agent{
			Node:         fmt.Sprintf("%s-%s%d", uniqueNodeName(), role, i),
			LogPath:      filepath.Join(dir, "consul.log"),
			bin:          bin,
			readyTimeout: clusterReadyTimeout,
		})
	}
	t.Cleanup(func() { c.cleanup(t) })

	began := time.Now()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var ips []string
		ips, err = freeLoopbackBlock(total)
		if err != nil {
			t.Fatalf("consultest: %v", err)
		}
		c.configure(ips, dataDirs)
		if err = c.start(); err == nil {
			t.Logf("consultest: cluster of %d servers and %d clients on %s.x ready in %s",
				servers, clients, ips[0][:strings.LastIndex(ips[0], ".")], time.Since(began).Round(time.Millisecond))
			return c
		}
		_ = c.stopAll()
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("consultest: start cluster: %v", err)
	return nil
}

// freeLoopbackBlock returns n addresses 127.A.B.2, 127.A.B.3, … of a random
// block whose Consul ports are free on every address.
func freeLoopbackBlock(n int) ([]string, error) {
	for range 50 {
		prefix := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(254), rand.IntN(256))
		ips := make([]string, n)
		free := true
		for i := range ips {
			ips[i] = prefix + strconv.Itoa(2+i)
			if !portsFree(ips[i], serverPort, serfLANPort, serfWANPort, httpPort, dnsPort) {
				free = false
				break
			}
		}
		if free {
			return ips, nil
		}
	}
	return nil, errors.New("no loopback block with Consul's ports free found in 50 tries")
}

// configure fixes every agent's addresses and command line.
func (c *Cluster) configure(ips, dataDirs []string) {
	c.serverAddrs = make(map[string]int, c.Servers)
	var joins []string
	for i := range c.Servers {
		c.serverAddrs[net.JoinHostPort(ips[i], strconv.Itoa(serverPort))] = i
		joins = append(joins, "-retry-join", ips[i])
	}
	for i, a := range c.Agents {
		args := []string{
			"-node", a.Node,
			"-data-dir", dataDirs[i],
			"-bind", ips[i],
			"-client", ips[i],
			"-grpc-port", "-1",
			"-grpc-tls-port", "-1",
			"-retry-interval", "1s",
			"-hcl", "disable_update_check = true",
			// Elections and leader failover as fast as in -dev mode.
			"-hcl", "performance { raft_multiplier = 1 }",
			// SIGTERM stops any agent without leaving, as a crash would:
			// clients would otherwise leave, and wait for servers to hear it.
			"-hcl", "leave_on_terminate = false",
			"-log-level", "warn",
		}
		if i < c.Servers {
			args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(c.Servers))
		}
		args = append(args, joins...)
		a.setAddrs(ips[i], httpPort, dnsPort, args)
	}
}

// start starts every agent and waits until the cluster is ready.
func (c *Cluster) start() error {
	for _, a := range c.Agents {
		if err := a.spawn(); err != nil {
			return err
		}
	}
	ok, state := poll(clusterReadyTimeout, func() (bool, string) {
		for _, a := range c.Agents {
			if a.current().exited() {
				return true, ""
			}
		}
		return c.ready()
	})
	for _, a := range c.Agents {
		if p := a.current(); p.exited() {
			return fmt.Errorf("agent %s: %w", a.Node, p.exitError())
		}
	}
	if !ok {
		return fmt.Errorf("cluster not ready after %s (last state: %s)\n%s", clusterReadyTimeout, state, c.logTails())
	}
	return nil
}

// ready reports whether every agent knows a leader, sees every member alive,
// and has every node in its view of the catalog.
func (c *Cluster) ready() (bool, string) {
	for _, a := range c.Agents {
		if ok, state := a.ready(); !ok {
			return false, a.Node + ": " + state
		}
		members, err := a.probe.Agent().Members(false)
		if err != nil {
			return false, a.Node + ": members: " + err.Error()
		}
		alive := 0
		for _, m := range members {
			if m.Status == 1 { // serf.StatusAlive
				alive++
			}
		}
		if alive != len(c.Agents) {
			return false, fmt.Sprintf("%s sees %d of %d members alive", a.Node, alive, len(c.Agents))
		}
		nodes, _, err := a.probe.Catalog().Nodes(nil)
		if err != nil {
			return false, a.Node + ": catalog: " + err.Error()
		}
		if len(nodes) != len(c.Agents) {
			return false, fmt.Sprintf("%s sees %d of %d nodes in the catalog", a.Node, len(nodes), len(c.Agents))
		}
	}
	return true, "ready"
}

// Server returns the i-th server agent.
func (c *Cluster) Server(i int) *Agent { return c.Agents[i] }

// ClientAgent returns the i-th client agent.
func (c *Cluster) ClientAgent(i int) *Agent { return c.Agents[c.Servers+i] }

// StopAgent stops agent i (an index into Agents) without a graceful leave, as
// a crash or a lost machine would.
func (c *Cluster) StopAgent(t testing.TB, i int) {
	t.Helper()
	c.Agents[i].Stop(t)
}

// StartAgent starts agent i again, with its data directory and addresses,
// and waits until it knows a leader and its node is in the catalog.
func (c *Cluster) StartAgent(t testing.TB, i int) {
	t.Helper()
	c.Agents[i].Restart(t)
}

// Leader waits until every running server agrees on one running server as
// leader, and returns that server's index. It fails the test after timeout.
func (c *Cluster) Leader(t testing.TB, timeout time.Duration) int {
	t.Helper()
	leader := -1
	Eventually(t, timeout, func() (bool, string) {
		leader = -1
		var views []string
		for i := range c.Servers {
			a := c.Agents[i]
			if !a.Running() {
				continue
			}
			addr, err := a.probe.Status().Leader()
			if err != nil {
				addr = "error: " + err.Error()
			}
			views = append(views, a.Node+"→"+addr)
			idx, known := c.serverAddrs[addr]
			switch {
			case !known || !c.Agents[idx].Running():
				return false, strings.Join(views, ", ")
			case leader == -1:
				leader = idx
			case leader != idx:
				return false, strings.Join(views, ", ")
			}
		}
		return leader >= 0, strings.Join(views, ", ")
	}, "the running servers to agree on a running leader")
	return leader
}

func (c *Cluster) stopAll() error {
	var errs []error
	for _, a := range slices.Backward(c.Agents) { // clients first, servers last
		if err := a.stop(); err != nil {
			errs = append(errs, fmt.Errorf("agent %s: %w", a.Node, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) cleanup(t testing.TB) {
	if err := c.stopAll(); err != nil {
		t.Errorf("consultest: stop cluster: %v", err)
	}
}

// logTails returns the last lines of every agent's log.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, a := range c.Agents {
		fmt.Fprintf(&b, "last lines of %s (%s):\n%s\n", a.LogPath, a.Node, logTail(a.LogPath, 8))
	}
	return b.String()
}
