package consulclient_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/internal/consultest"
)

// checkOf reads the TTL check of serviceID from agent.
func checkOf(t *testing.T, agent *consultest.Agent, serviceID string) *api.AgentCheck {
	t.Helper()
	checks, err := agent.Client.Agent().Checks()
	require.NoError(t, err)
	chk := checks[consulclient.CheckID(serviceID)]
	require.NotNil(t, chk, "check of %s", serviceID)
	return chk
}

// The hand-written heartbeat leaves a check as the api client's would: the
// same status and output, for outputs that need JSON's escapes, for every
// status svcwrap sends.
func TestHeartbeat_SameAsTheAPIClients(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("hand")))
	require.NoError(t, c.Register(t.Context(), 0, service("api")))
	for _, status := range []string{api.HealthPassing, api.HealthWarning, api.HealthCritical} {
		for _, output := range []string{
			"", "ok", `quote " backslash \ slash /`, "line\nbreak\ttab\r\x00\x1f",
			"ünïcödé ☃ 𝄞", "bad utf-8 \xff\xfe", "<html> & \u2028\u2029", string(make([]byte, 4096)),
		} {
			require.NoError(t, c.SetStatus(t.Context(), 0, "hand", status, output))
			require.NoError(t, agent.Client.Agent().UpdateTTL(consulclient.CheckID("api"), output, status))
			hand, viaAPI := checkOf(t, agent, "hand"), checkOf(t, agent, "api")
			assert.Equal(t, status, hand.Status)
			assert.Equal(t, viaAPI.Status, hand.Status, "%q", output)
			assert.Equal(t, viaAPI.Output, hand.Output, "%q", output)
		}
	}
}

// An agent whose HTTP API listens on a unix socket takes the heartbeats there.
func TestHeartbeat_UnixSocketAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "http.sock")
	agent := consultest.StartAgent(t, consultest.WithArgs("-hcl", `addresses { http = "127.0.0.1 unix://`+sock+`" }`))
	c, err := consulclient.New(consulclient.Config{Addrs: []string{"unix://" + sock}})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("ux")))
	require.NoError(t, c.SetStatus(t.Context(), 0, "ux", api.HealthPassing, "over the socket"))
	chk := checkOf(t, agent, "ux")
	assert.Equal(t, api.HealthPassing, chk.Status)
	assert.Equal(t, "over the socket", chk.Output)
	require.NoError(t, c.Deregister(t.Context(), 0, "ux"))
	consultest.WaitServiceGone(t, agent.Client, "ux", 5*time.Second)
}

// Heartbeats at once from one client (a registration's first status beside a
// heartbeat) all arrive: one uses the hand-written request's buffers, the
// others the api client.
func TestHeartbeat_AtOnce(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("many")))
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				errs <- c.SetStatus(t.Context(), 0, "many", api.HealthPassing, "at once")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, "at once", checkOf(t, agent, "many").Output)
}

// A heartbeat to an agent that has stopped answering (SIGSTOPped) ends when
// its context does, not at the client's timeout.
func TestHeartbeat_CancelledWhileTheAgentHangs(t *testing.T) {
	agent := consultest.StartAgent(t)
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}, Timeout: time.Hour})
	require.NoError(t, err)
	require.NoError(t, c.Register(t.Context(), 0, service("hung")))
	agent.Pause(t)
	defer agent.Resume(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.SetStatus(ctx, 0, "hung", api.HealthPassing, "") }()
	// The stopped agent's kernel still accepts the connection and takes the
	// request, so a tenth of a second in, the heartbeat is waiting for an
	// answer that will not come. (Cancelled sooner, it must end as well.)
	time.AfterFunc(100*time.Millisecond, cancel)
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled heartbeat to a hung agent did not return")
	}
}

// The api client sends the token it read from the environment when svcwrap's
// own is empty (a token file not yet written, CONSUL_HTTP_TOKEN set); the
// hand-written heartbeat sends the same.
func TestHeartbeat_EnvironmentTokenAsTheAPIClientSendsIt(t *testing.T) {
	mgmt := consultest.NewUUID(t)
	agent := consultest.StartAgent(t, consultest.WithACL(mgmt))
	t.Setenv("CONSUL_HTTP_TOKEN", mgmt)
	empty := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}, TokenFile: empty})
	require.NoError(t, err)
	s := service("env-token")
	s.Output = ""
	require.NoError(t, c.Register(t.Context(), 0, s))
	require.NoError(t, c.SetStatus(t.Context(), 0, "env-token", api.HealthPassing, "with the environment's token"))
	consultest.WaitServiceStatus(t, agent.Client, "env-token", api.HealthPassing, 5*time.Second)
}

// Something on the agent's address that answers and keeps the connection
// (a proxy; Consul closes it) is a fault a real agent cannot be made to
// show: the heartbeat takes the whole answer, and does not wait for a close
// that will not come.
func TestHeartbeat_AnswerWithoutTheClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu   sync.Mutex
		held []net.Conn
		wg   sync.WaitGroup
	)
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			wg.Go(func() {
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
			})
		}
	})
	c, err := consulclient.New(consulclient.Config{Addrs: []string{l.Addr().String()}, Timeout: time.Hour})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- c.SetStatus(t.Context(), 0, "held", api.HealthPassing, "") }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the heartbeat waited for a close after the whole answer had come")
	}
}
