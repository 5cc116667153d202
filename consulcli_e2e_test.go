package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// What the README says about working beside the consul CLI, against a real
// agent, through the API calls the CLI makes: `consul maint -service` drains
// an instance and svcwrap's heartbeats leave it drained; a manual
// deregistration is undone at the next heartbeat; a svcwrap restart drops
// service maintenance and keeps node maintenance.
func TestConsulCLI(t *testing.T) {
	agent := consultest.StartAgent(t)
	c := agent.Client
	const id = "cli"
	heartbeat := 200 * time.Millisecond
	args := []string{"--ttl", "2s", "--heartbeat", heartbeat.String(), id, "--", "sleep", "1000"}
	w := start(t, agent, args...)
	consultest.WaitServiceStatus(t, c, id, api.HealthPassing, wait)

	// passing reports whether a health query for passing instances (what DNS
	// and consul-template use) returns the instance.
	passing := func() bool {
		entries, _, err := c.Health().Service(id, "", true, nil)
		require.NoError(t, err)
		return len(entries) == 1
	}
	maintChecks := func() []string {
		checks, err := c.Agent().Checks()
		require.NoError(t, err)
		var ids []string
		for cid := range checks {
			if cid == "_service_maintenance:"+id || cid == "_node_maintenance" {
				ids = append(ids, cid)
			}
		}
		return ids
	}
	// steady checks cond on every poll for ten heartbeats.
	steady := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(10 * heartbeat); time.Now().Before(end); {
			require.True(t, cond(), what)
			time.Sleep(heartbeat / 4) // a poll interval, bounded by end
		}
	}

	// consul maint -enable -service=cli: out of the passing set, and it stays
	// out while svcwrap heartbeats its own check.
	require.NoError(t, c.Agent().EnableServiceMaintenance(id, "drain"))
	consultest.Eventually(t, wait, func() (bool, string) { return !passing(), "" }, "the drained instance to leave the passing set")
	steady("the maintenance check survives svcwrap's heartbeats", func() bool {
		return !passing() && len(maintChecks()) == 1
	})
	status, _ := checkStatus(t, c, id)
	assert.Equal(t, api.HealthPassing, status, "svcwrap's own check keeps passing underneath")
	require.NoError(t, c.Agent().DisableServiceMaintenance(id))
	consultest.Eventually(t, wait, func() (bool, string) { return passing(), "" }, "the instance back in the passing set")

	// consul services deregister -id=cli: back within a few heartbeats.
	require.NoError(t, c.Agent().ServiceDeregister(id))
	consultest.WaitServiceStatus(t, c, id, api.HealthPassing, wait)

	// A svcwrap restart: service maintenance goes with the registration;
	// node maintenance is the agent's, and stays.
	require.NoError(t, c.Agent().EnableServiceMaintenance(id, "drain"))
	require.NoError(t, c.Agent().EnableNodeMaintenance("node drain"))
	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, c, id, wait)
	w = start(t, agent, args...)
	consultest.Eventually(t, wait, func() (bool, string) {
		status, out := checkStatus(t, c, id)
		return status == api.HealthPassing, status + " " + out
	}, "the new svcwrap's check to pass")
	assert.Equal(t, []string{"_node_maintenance"}, maintChecks(), "after the restart")
	assert.False(t, passing(), "node maintenance still drains the instance")
	require.NoError(t, c.Agent().DisableNodeMaintenance())
	consultest.Eventually(t, wait, func() (bool, string) { return passing(), fmt.Sprint(maintChecks()) }, "the instance back in the passing set")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, c, id, wait)
}
