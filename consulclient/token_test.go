package consulclient_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/internal/consultest"
)

// writeToken replaces the token file as an operator's rotation would: a new
// file renamed over the old one.
func writeToken(t *testing.T, path, token string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(token+"\n"), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// A rotated token file is read again when the agent rejects the token: a
// heartbeat says ErrTokenChanged (register again, so the agent syncs with the
// new token), and registration and deregistration simply use the new token.
func TestClient_TokenFileReadAgainWhenRejected(t *testing.T) {
	mgmt := consultest.NewUUID(t)
	agent := consultest.StartAgent(t, consultest.WithACL(mgmt))
	agent.CreatePolicy(t, "web", `service "web" { policy = "write" }`)
	t1 := agent.CreateToken(t, "web")
	file := filepath.Join(t.TempDir(), "token")
	writeToken(t, file, t1.SecretID)

	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}, TokenFile: file})
	require.NoError(t, err)
	ctx := t.Context()
	s := service("web")
	s.Meta = nil
	require.NoError(t, c.Register(ctx, 0, s))

	t2 := agent.CreateToken(t, "web")
	writeToken(t, file, t2.SecretID)
	agent.DeleteToken(t, t1)
	err = c.SetStatus(ctx, 0, "web", api.HealthPassing, "ok")
	require.ErrorIs(t, err, consulclient.ErrTokenChanged)
	assert.NotContains(t, err.Error(), t1.SecretID)
	assert.NotContains(t, err.Error(), t2.SecretID)
	require.NoError(t, c.Register(ctx, 0, s))
	require.NoError(t, c.SetStatus(ctx, 0, "web", api.HealthPassing, "ok"))
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, 5*time.Second)

	// Rotated again, and revoked before anything else was said: the
	// deregistration reads the file and goes through.
	t3 := agent.CreateToken(t, "web")
	writeToken(t, file, t3.SecretID)
	agent.DeleteToken(t, t2)
	require.NoError(t, c.Deregister(ctx, 0, "web"))
	consultest.WaitServiceGone(t, agent.Client, "web", 5*time.Second)
}

// A token the agent rejects, with no new one to read, is a rejection:
// permanent, and no reason to move to another agent.
func TestClient_RejectedToken(t *testing.T) {
	agent := consultest.StartAgent(t, consultest.WithACL(consultest.NewUUID(t)))
	c, err := consulclient.New(consulclient.Config{Addrs: []string{agent.HTTPAddr}, Token: consultest.NewUUID(t)})
	require.NoError(t, err)
	err = c.Register(t.Context(), 0, service("web"))
	require.ErrorIs(t, err, consulclient.ErrRejected)
	assert.NotErrorIs(t, err, consulclient.ErrUnreachable)
	assert.True(t, consulclient.Permanent(err))
}
