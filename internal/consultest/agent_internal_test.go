package consultest

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A port taken while the agent is down: the start fails with errAddrInUse and
// the log's last lines, and Restart retries until the port is free again.
func TestAgent_PortTakenWhileDown(t *testing.T) {
	t.Parallel()
	a := StartAgent(t)
	a.Stop(t)

	squatter, err := net.Listen("tcp", a.HTTPAddr)
	require.NoError(t, err)
	err = a.start()
	require.ErrorIs(t, err, errAddrInUse)
	assert.Contains(t, err.Error(), "last lines of "+a.LogPath)
	assert.Contains(t, err.Error(), a.HTTPAddr+": bind: address already in use")

	time.AfterFunc(300*time.Millisecond, func() { squatter.Close() })
	a.Restart(t)
	assert.True(t, a.Running())
	leader, err := a.Client.Status().Leader()
	require.NoError(t, err)
	assert.NotEmpty(t, leader)
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts("127.0.0.1", 5)
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, p := range ports {
		assert.False(t, seen[p], "port %d twice", p)
		seen[p] = true
		assert.True(t, portsFree("127.0.0.1", p), "port %d free for TCP and UDP", p)
	}
}
