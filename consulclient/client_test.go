package consulclient_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/internal/consultest"
)

func service(id string) consulclient.Service {
	return consulclient.Service{
		ID: id, Name: "web", Tags: []string{"a", "b"}, Meta: map[string]string{"team": "x"},
		Address: "127.0.0.9", Port: 8080, TTL: 10 * time.Second, DeregisterAfter: time.Minute,
		Status: api.HealthCritical, Output: "starting",
	}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestClient_RegisterStatusDeregister(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	ctx := t.Context()

	require.NoError(t, c.Register(ctx, 0, service("web-1")))
	svc, _, err := agent.Client.Agent().Service("web-1", nil)
	require.NoError(t, err)
	assert.Equal(t, "web", svc.Service)
	assert.Equal(t, []string{"a", "b"}, svc.Tags)
	assert.Equal(t, "x", svc.Meta["team"])
	assert.Equal(t, "127.0.0.9", svc.Address)
	assert.Equal(t, 8080, svc.Port)

	checks, err := agent.Client.Agent().Checks()
	require.NoError(t, err)
	chk := checks["service:web-1"]
	require.NotNil(t, chk, "the TTL check is registered as service:<ID>")
	assert.Equal(t, api.HealthCritical, chk.Status)
	assert.Equal(t, "starting", chk.Output)
	assert.Equal(t, "svcwrap: web", chk.Name)
	assert.Equal(t, "kept by svcwrap while the wrapped command runs", chk.Notes)
	assert.Equal(t, "web-1", chk.ServiceID)
	// The TTL and DeregisterCriticalServiceAfter are not shown by the agent's
	// API; the TTL tests and the SIGKILL test in the command's tests see the
	// agent act on them.

	require.NoError(t, c.SetStatus(ctx, 0, "web-1", api.HealthPassing, "ready"))
	consultest.WaitServiceStatus(t, agent.Client, "web-1", api.HealthPassing, 5*time.Second)

	h, err := c.Holder(ctx, 0, "web-1")
	require.NoError(t, err)
	require.NotNil(t, h)
	assert.Equal(t, "x", h.Meta["team"])
	assert.Equal(t, api.HealthPassing, h.CheckStatus)
	assert.False(t, h.TTLExpired())

	require.NoError(t, c.Deregister(ctx, 0, "web-1"))
	consultest.WaitServiceGone(t, agent.Client, "web-1", 5*time.Second)
	require.NoError(t, c.Deregister(ctx, 0, "web-1"), "deregistering a service that is gone is success")

	h, err = c.Holder(ctx, 0, "web-1")
	require.NoError(t, err)
	assert.Nil(t, h)
}

func TestClient_SetStatusOnForgottenService(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	err = c.SetStatus(t.Context(), 0, "nobody", api.HealthPassing, "")
	require.Error(t, err)
	assert.ErrorIs(t, err, consulclient.ErrNotRegistered)
}

func TestClient_TTLExpiry(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	s := service("short")
	s.TTL = 200 * time.Millisecond
	s.Status, s.Output = api.HealthPassing, "ok"
	require.NoError(t, c.Register(t.Context(), 0, s))
	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		h, err := c.Holder(t.Context(), 0, "short")
		if err != nil || h == nil {
			return false, "no holder"
		}
		return h.TTLExpired(), h.CheckStatus + ": " + h.CheckOutput
	}, "the agent marks the lapsed TTL")
}

// Every call goes to the agent it names, and nowhere else: an agent that does
// not answer is ErrUnreachable, named in the error, and the next agent of the
// list is not tried behind the caller's back.
func TestClient_CallsTheAgentItNames(t *testing.T) {
	dead := deadAddr(t)
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{dead, agent.HTTPAddr}})
	require.NoError(t, err)
	require.Equal(t, 2, c.Agents())

	err = c.Register(t.Context(), 0, service("fo"))
	require.ErrorIs(t, err, consulclient.ErrUnreachable)
	assert.Contains(t, err.Error(), dead)
	assert.False(t, consulclient.Permanent(err), "a dead agent may come back")
	svcs, err := agent.Client.Agent().Services()
	require.NoError(t, err)
	assert.Empty(t, svcs, "nothing registered on the agent not named")

	require.NoError(t, c.Register(t.Context(), 1, service("fo")))
	consultest.WaitServicePresent(t, agent.Client, "fo", 5*time.Second)
	assert.Equal(t, agent.HTTPAddr, strings.TrimPrefix(c.Addr(1), "http://"))
}

// NodeAddress is the address the agent gives services registered without
// one: its node's.
func TestClient_NodeAddress(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	addr, err := c.NodeAddress(t.Context(), 0)
	require.NoError(t, err)
	node, _, err := agent.Client.Catalog().Node(agent.Node, nil)
	require.NoError(t, err)
	assert.Equal(t, node.Node.Address, addr)
}

// A hung agent is a fault a real one cannot be made to produce on demand: a
// server that accepts and never answers.
func TestClient_HungAgentTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c, err := consulclient.New(consulclient.Config{Addrs: []string{srv.URL}, Timeout: 100 * time.Millisecond})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- c.SetStatus(t.Context(), 0, "x", api.HealthPassing, "") }()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.ErrorContains(t, err, "deadline exceeded")
	case <-time.After(10 * time.Second):
		t.Fatal("a hung agent blocked SetStatus past its timeout")
	}
}

// A request made with UntilDeadline waits past the client's timeout for an
// agent that answers late, up to its context's deadline; without it, the
// same answer is given up on at the timeout.
func TestClient_UntilDeadlineWaitsPastTheTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The fault: an agent busy with others' requests answers this one
		// four timeouts after it came.
		select {
		case <-time.After(4 * timeout):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{srv.URL}, Timeout: timeout})
	require.NoError(t, err)

	err = c.Deregister(t.Context(), 0, "x")
	require.ErrorIs(t, err, context.DeadlineExceeded, "without UntilDeadline the timeout bounds the request")

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, c.Deregister(consulclient.UntilDeadline(ctx), 0, "x"))

	short, cancel := context.WithTimeout(t.Context(), 2*timeout)
	defer cancel()
	err = c.Deregister(consulclient.UntilDeadline(short), 0, "x")
	require.ErrorIs(t, err, context.DeadlineExceeded, "the context's deadline still bounds it")
}

// The token is sent, and never appears in an error.
func TestClient_TokenNeverInErrors(t *testing.T) {
	const secret = "s3cr3t-t0ken-value"
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("X-Consul-Token")
		http.Error(w, "ACL not found", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(secret+"\n"), 0o600))
	c, err := consulclient.New(consulclient.Config{Addrs: []string{srv.URL}, TokenFile: file})
	require.NoError(t, err)
	err = c.Register(t.Context(), 0, service("x"))
	require.Error(t, err)
	assert.Equal(t, secret, got)
	assert.NotContains(t, err.Error(), secret)
}

func TestClient_UnreadableTokenFile(t *testing.T) {
	_, err := consulclient.New(consulclient.Config{TokenFile: filepath.Join(t.TempDir(), "missing")})
	require.Error(t, err)
}

func TestClient_EnvironmentAddress(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Setenv("CONSUL_HTTP_ADDR", agent.HTTPAddr)
	c, err := consulclient.New(consulclient.Config{})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("env")))
	consultest.WaitServicePresent(t, agent.Client, "env", 5*time.Second)
}
