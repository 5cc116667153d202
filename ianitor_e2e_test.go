package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// The command lines ianitor users have, each run unchanged against a real
// agent (RESEARCH.md, ianitor's README and --help): svcwrap registers what
// they say and deregisters when stopped. The agent comes from
// CONSUL_HTTP_ADDR where a line names none (ianitor's default, localhost,
// is TestParse_IanitorDefaults; a host without a port is
// TestConsulAgent_DefaultPort).
func TestIanitorCommandLines(t *testing.T) {
	need(t, "nc")
	agent := consultest.StartAgent(t)
	t.Setenv("CONSUL_HTTP_ADDR", agent.HTTPAddr)
	port := strconv.Itoa(freePort(t))
	sleep := []string{"sh", "-c", "exec sleep 1000", "sh", "--some-switch"}
	for _, c := range []struct {
		name string
		line []string // up to and including --
		cmd  []string
		id   string
		svc  api.AgentService // what is registered; zero fields unchecked
	}{
		// README: `ianitor appname -- ./yourapp --some-switch`, and its
		// supervisord line `ianitor rabbitmq -- /usr/sbin/rabbitmq-server`.
		{name: "readme", line: []string{"appname", "--"}, cmd: sleep, id: "appname"},
		// --help's spelling: --flag=value.
		{
			name: "equals-forms",
			line: []string{"--consul-agent=" + agent.HTTPAddr, "--ttl=10", "--heartbeat=1", "--tags=a", "--tags=b",
				"--id=eq-1", "--port=" + port, "-v", "eq", "--"},
			cmd: []string{"nc", "-l", port}, id: "eq-1",
			svc: api.AgentService{Service: "eq", Tags: []string{"a", "b"}},
		},
		// The synopsis, every flag with its value apart, -vvv.
		{
			name: "synopsis",
			line: []string{"--consul-agent", agent.HTTPAddr, "--ttl", "10", "--heartbeat", "1", "--tags", "one",
				"--tags", "two", "--id", "ian-1", "--address", "127.0.0.5", "--port", port, "-vvv", "ian", "--"},
			cmd: []string{"nc", "-l", port}, id: "ian-1",
			svc: api.AgentService{Service: "ian", Tags: []string{"one", "two"}, Address: "127.0.0.5"},
		},
		// --ttl and --heartbeat are floats of seconds; -v counts when repeated.
		{name: "float-seconds", line: []string{"--ttl", "2.5", "--heartbeat", "0.5", "-v", "-v", "float", "--"}, cmd: sleep, id: "float"},
		// The fork's (mruwnik/ianitor) checks: --check TYPE:COMMAND and
		// --interval SECONDS; the service passes once the script does.
		{name: "fork-check-interval", line: []string{"--check", "script:exit 0", "--interval", "0.5", "--ttl", "10", "fork", "--"}, cmd: sleep, id: "fork"},
		// argparse takes flags after the service name too.
		{name: "flags-after-name", line: []string{"late", "--ttl", "5", "--tags", "x", "--"}, cmd: sleep, id: "late",
			svc: api.AgentService{Tags: []string{"x"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := start(t, nil, append(append([]string{}, c.line...), c.cmd...)...)
			consultest.WaitServiceStatus(t, agent.Client, c.id, api.HealthPassing, wait)
			svc, _, err := agent.Client.Agent().Service(c.id, nil)
			require.NoError(t, err)
			if c.svc.Service != "" {
				assert.Equal(t, c.svc.Service, svc.Service)
			}
			if c.svc.Tags != nil {
				assert.Equal(t, c.svc.Tags, svc.Tags)
			}
			if c.svc.Address != "" {
				assert.Equal(t, c.svc.Address, svc.Address)
			}
			if strings.Contains(strings.Join(c.line, " "), "port") {
				assert.Equal(t, port, strconv.Itoa(svc.Port))
			}
			w.signal(syscall.SIGTERM)
			w.wait(wait)
			consultest.WaitServiceGone(t, agent.Client, c.id, wait)
		})
	}
}

// ianitor's defaults: no --consul-agent means localhost's port 8500 (the api
// client's 127.0.0.1:8500), --consul-agent localhost means localhost:8500.
func TestParse_IanitorDefaults(t *testing.T) {
	_, addrs, err := parseArgs(t, nil, "appname", "--", "./yourapp", "--some-switch")
	require.NoError(t, err)
	assert.Empty(t, addrs, "the api client's default, 127.0.0.1:8500")
	_, addrs, err = parseArgs(t, nil, "--consul-agent", "localhost", "appname", "--", "./yourapp")
	require.NoError(t, err)
	assert.Equal(t, []string{"localhost:8500"}, addrs)
	_, addrs, err = parseArgs(t, nil, "--consul-agent=consul.internal", "appname", "--", "./yourapp")
	require.NoError(t, err)
	assert.Equal(t, []string{"consul.internal:8500"}, addrs)
}
