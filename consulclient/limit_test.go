package consulclient_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/internal/consultest"
)

// connLimit is the agent's limits.http_max_conns_per_client in these tests.
const connLimit = 2

// limitedAgent starts an agent that admits connLimit concurrent connections
// per client IP; the test's own helpers connect from 127.0.0.2 and do not
// count against the code under test, which connects from 127.0.0.1.
func limitedAgent(t *testing.T) *consultest.Agent {
	return consultest.StartAgent(t,
		consultest.WithHelperSource("127.0.0.2"),
		consultest.WithArgs("-hcl", "limits { http_max_conns_per_client = 2 }"))
}

// occupy opens n idle connections to addr from 127.0.0.1, as other wrappers
// on the host would hold them, until the test ends or release is called.
func occupy(t *testing.T, addr string, n int) (release func()) {
	var conns []net.Conn
	release = func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(release)
	for range n {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	return release
}

// An agent at its per-IP connection limit answers 429 with a line of text.
// The client reports that as a refusal, for every call (the health endpoint
// once decoded it as JSON: "invalid character 'Y'"), and works again once
// connections are free.
func TestClient_RefusedAtConnectionLimit(t *testing.T) {
	agent := limitedAgent(t)
	release := occupy(t, agent.HTTPAddr, connLimit)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)

	_, err = c.Holder(t.Context(), 0, "lim")
	require.ErrorIs(t, err, consulclient.ErrRefused)
	assert.NotContains(t, err.Error(), "invalid character")
	require.ErrorIs(t, c.Register(t.Context(), 0, service("lim")), consulclient.ErrRefused)
	require.ErrorIs(t, c.SetStatus(t.Context(), 0, "lim", "passing", "ok"), consulclient.ErrRefused)
	require.ErrorIs(t, c.Deregister(t.Context(), 0, "lim"), consulclient.ErrRefused)

	release()
	registersOnceAdmitted(t, c, "lim")
	consultest.WaitServicePresent(t, agent.Client, "lim", 5*time.Second)
}

// A refusing agent is alive: the client says so (ErrRefused, not
// ErrUnreachable), so that the caller retries it rather than move the
// registration to the next agent of the list.
func TestClient_RefusalIsNotUnreachable(t *testing.T) {
	full := limitedAgent(t)
	release := occupy(t, full.HTTPAddr, connLimit)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{full.HTTPAddr}})
	require.NoError(t, err)
	err = c.Register(t.Context(), 0, service("fo429"))
	require.ErrorIs(t, err, consulclient.ErrRefused)
	assert.NotErrorIs(t, err, consulclient.ErrUnreachable)
	assert.False(t, consulclient.Permanent(err), "a refusal heals by itself")

	release()
	registersOnceAdmitted(t, c, "fo429")
	consultest.WaitServicePresent(t, full.Client, "fo429", 5*time.Second)
}

// The client keeps no connection between heartbeats: shortly after a call, an
// agent admitting one connection per IP takes a connection from elsewhere in
// the same process.
func TestClient_NoIdleConnectionKept(t *testing.T) {
	agent := consultest.StartAgent(t,
		consultest.WithHelperSource("127.0.0.2"),
		consultest.WithArgs("-hcl", "limits { http_max_conns_per_client = 1 }"))
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("idle")))

	other, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		err := other.SetStatus(t.Context(), 0, "idle", "passing", "ok")
		return err == nil, errString(err)
	}, "a second client's call once the first has let its connection go")
}

// registersOnceAdmitted retries registering id until the agent, its held
// connections released, admits the client's connection.
func registersOnceAdmitted(t *testing.T, c *consulclient.Client, id string) {
	t.Helper()
	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		err := c.Register(t.Context(), 0, service(id))
		return err == nil, errString(err)
	}, "registration once the agent admits the connection")
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// A misconfiguration is not a refusal: HTTPS spoken to the agent's plain HTTP
// port fails for good, and must not be retried as "too many connections".
func TestClient_TLSMismatchIsNotARefusal(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{"https://" + agent.HTTPAddr}})
	require.NoError(t, err)
	err = c.Register(t.Context(), 0, service("tls"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, consulclient.ErrRefused)
	assert.ErrorIs(t, err, consulclient.ErrUnreachable, "another agent of the list may answer")
	assert.ErrorIs(t, err, consulclient.ErrTLS)
	assert.NotContains(t, err.Error(), consulclient.ErrUnreachable.Error(), "a TLS failure is not worded as an agent that does not answer")
	assert.True(t, consulclient.Permanent(err), "retrying will not heal it: %v", err)
}
