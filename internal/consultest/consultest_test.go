package consultest_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, so that a test can check what a helper fails with.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalOf runs f on a recorder in its own goroutine and returns the message
// f failed with, or "" if it returned normally.
func fatalOf(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestBinary(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		t.Setenv(consultest.EnvBinary, "/nonexistent/consul")
		msg := fatalOf(t, func(tb testing.TB) { consultest.Binary(tb) })
		assert.Equal(t, "consul agent not found at /nonexistent/consul: run `make consul`", msg)
	})
	t.Run("module-root", func(t *testing.T) {
		t.Setenv(consultest.EnvBinary, "")
		want, err := filepath.Abs("../../bin/consul")
		require.NoError(t, err)
		var got string
		msg := fatalOf(t, func(tb testing.TB) { got = consultest.Binary(tb) })
		if msg != "" {
			assert.Contains(t, msg, want, "the message names the expected path")
			return
		}
		assert.Equal(t, want, got)
	})
}

func TestEventually_TimeoutSaysWhatAndLastState(t *testing.T) {
	calls := 0
	msg := fatalOf(t, func(tb testing.TB) {
		consultest.Eventually(tb, 50*time.Millisecond, func() (bool, string) {
			calls++
			return false, fmt.Sprintf("state %d", calls)
		}, "the answer")
	})
	assert.Contains(t, msg, "waiting for the answer")
	assert.Contains(t, msg, fmt.Sprintf("last state: state %d", calls))
	assert.Greater(t, calls, 1)
}

func TestStartAgent(t *testing.T) {
	t.Parallel()
	a := consultest.StartAgent(t)

	assert.True(t, strings.HasPrefix(a.HTTPAddr, "127.0.0.1:"), a.HTTPAddr)
	assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", a.DNSPort), a.DNSAddr)
	assert.NotZero(t, a.PID())

	leader, err := a.Client.Status().Leader()
	require.NoError(t, err)
	assert.NotEmpty(t, leader)

	_, err = a.Client.KV().Put(&api.KVPair{Key: "consultest", Value: []byte("hello")}, nil)
	require.NoError(t, err)
	kv, _, err := a.Client.KV().Get("consultest", nil)
	require.NoError(t, err)
	require.NotNil(t, kv)
	assert.Equal(t, "hello", string(kv.Value))

	addrs, err := resolver(a.DNSAddr).LookupHost(ctx(t), a.Node+".node.consul.")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1"}, addrs)
}

func TestStartAgent_Options(t *testing.T) {
	t.Parallel()
	a := consultest.StartAgent(t,
		consultest.WithBind("127.0.0.2"),
		consultest.WithArgs("-node-meta", "purpose:consultest"))

	assert.True(t, strings.HasPrefix(a.HTTPAddr, "127.0.0.2:"), a.HTTPAddr)
	// The leader puts the node in the catalog; the node's metadata follows
	// with the agent's own first sync.
	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		node, _, err := a.Client.Catalog().Node(a.Node, nil)
		if err != nil || node == nil {
			return false, fmt.Sprintf("node %v, error %v", node, err)
		}
		return node.Node.Address == "127.0.0.2" && node.Node.Meta["purpose"] == "consultest",
			fmt.Sprintf("address %s, meta %v", node.Node.Address, node.Node.Meta)
	}, "the node at 127.0.0.2 with meta purpose=consultest in the catalog")
}

func TestAgent_RestartForgetsServices(t *testing.T) {
	t.Parallel()
	a := consultest.StartAgent(t)
	const id = "web"
	require.NoError(t, a.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: id, Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "service:" + id, TTL: "10s"},
	}))
	consultest.WaitServiceStatus(t, a.Client, id, api.HealthCritical, 5*time.Second)
	require.NoError(t, a.Client.Agent().UpdateTTL("service:"+id, "ok", api.HealthPassing))
	consultest.WaitServiceStatus(t, a.Client, id, api.HealthPassing, 5*time.Second)

	httpAddr, pid := a.HTTPAddr, a.PID()
	a.Restart(t)

	assert.Equal(t, httpAddr, a.HTTPAddr, "same address after a restart")
	assert.NotEqual(t, pid, a.PID(), "a new process")
	consultest.WaitServiceGone(t, a.Client, id, 5*time.Second)

	a.Stop(t)
	assert.Zero(t, a.PID())
	_, err := a.Client.Status().Leader()
	assert.Error(t, err, "a stopped agent does not answer")
	a.Stop(t) // stopping twice is harmless
}

func TestStartCluster(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := consultest.StartCluster(t, 3, 1)
	leader := c.Leader(t, 30*time.Second)
	t.Logf("3 servers + 1 client: leader %s after %s", c.Agents[leader].Node, time.Since(began).Round(time.Millisecond))

	// The client agent's DNS knows the three servers. A leader is elected
	// before every server has put itself in the catalog, so poll.
	client := c.ClientAgent(0)
	var want []string
	for i := range c.Servers {
		host, _, err := net.SplitHostPort(c.Server(i).HTTPAddr)
		require.NoError(t, err)
		want = append(want, host)
	}
	sort.Strings(want)
	consultest.Eventually(t, 30*time.Second, func() (bool, string) {
		srvs, err := resolver(client.DNSAddr).LookupHost(ctx(t), "consul.service.consul.")
		if err != nil {
			return false, err.Error()
		}
		sort.Strings(srvs)
		_, records, err := resolver(client.DNSAddr).LookupSRV(ctx(t), "", "", "consul.service.consul.")
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(want, srvs) && len(records) == 3, fmt.Sprintf("A %v, %d SRV records", srvs, len(records))
	}, "the three servers in the client agent's DNS")

	// A service registered with the client agent reaches the servers' catalog.
	require.NoError(t, client.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web", Name: "web"}))
	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		entries, _, err := c.Server(0).Client.Catalog().Service("web", "", nil)
		if err != nil {
			return false, err.Error()
		}
		return len(entries) == 1, fmt.Sprintf("%d catalog entries", len(entries))
	}, "service web in the catalog of server 0")

	// Losing the leader elects another.
	stopped := time.Now()
	c.StopAgent(t, leader)
	next := c.Leader(t, 30*time.Second)
	assert.NotEqual(t, leader, next)
	t.Logf("leader %s stopped; %s leads after %s", c.Agents[leader].Node, c.Agents[next].Node, time.Since(stopped).Round(time.Millisecond))

	// The old leader comes back with its data and rejoins.
	c.StartAgent(t, leader)
	c.Leader(t, 30*time.Second)
	consultest.Eventually(t, 30*time.Second, func() (bool, string) {
		members, err := c.Agents[leader].Client.Agent().Members(false)
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, m := range members {
			if m.Status == 1 {
				alive++
			}
		}
		return alive == len(c.Agents), fmt.Sprintf("%d of %d members alive", alive, len(c.Agents))
	}, "the restarted server to see every member alive")
}

// resolver asks only the DNS server at addr.
func resolver(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}
