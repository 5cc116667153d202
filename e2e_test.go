package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

const wait = 20 * time.Second

// The product's headline: nc registered as "netcat", found by DNS, reached by
// curl, and gone from Consul when it exits.
func TestSeed_Netcat(t *testing.T) {
	need(t, "nc", "dig", "curl")
	agent := consultest.StartAgent(t)
	port := freePort(t)
	w := start(t, agent, "--port", strconv.Itoa(port), "netcat", "--", "nc", "-l", strconv.Itoa(port))

	consultest.WaitServiceStatus(t, agent.Client, "netcat", api.HealthPassing, wait)
	svcs, _, err := agent.Client.Catalog().Service("netcat", "", nil)
	require.NoError(t, err)
	require.Len(t, svcs, 1)
	assert.Equal(t, port, svcs[0].ServicePort)

	dig, err := exec.Command("dig", "@127.0.0.1", "-p", strconv.Itoa(agent.DNSPort),
		"netcat.service.consul", "SRV", "+short").CombinedOutput()
	require.NoError(t, err, "%s", dig)
	fields := strings.Fields(string(dig))
	require.Len(t, fields, 4, "one SRV answer: %q", dig)
	assert.Equal(t, strconv.Itoa(port), fields[2], "SRV port")

	// nc answers nothing, so curl times out; what matters is that nc printed
	// the request, and that the probe never took nc's one connection.
	_ = exec.Command("curl", "-s", "--max-time", "2", "--data", "Hello",
		fmt.Sprintf("http://127.0.0.1:%d/areyouthere", port)).Run()
	w.out.waitFor(t, "POST /areyouthere", wait)
	w.out.waitFor(t, "Hello", wait)

	assert.Equal(t, 0, w.wait(wait), "nc exits 0 when curl hangs up")
	consultest.WaitServiceGone(t, agent.Client, "netcat", wait)
}

// Passing only while the child's tree listens on --port, read from the
// kernel; critical again when it stops listening.
func TestReadiness_FollowsTheListeningSocket(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	args := append([]string{"--port", strconv.Itoa(port), "--check-interval", "100ms", "late", "--"},
		helperArgv("listener", strconv.Itoa(port))...)
	w := start(t, agent, args...)
	w.out.waitFor(t, "ready", wait)

	consultest.WaitServicePresent(t, agent.Client, "late", wait)
	status, output := checkStatus(t, agent.Client, "late")
	assert.Equal(t, api.HealthCritical, status, "not listening yet: %s", output)

	w.signal(syscall.SIGUSR1) // forwarded: the child starts listening
	w.out.waitFor(t, "listening <nil>", wait)
	consultest.WaitServiceStatus(t, agent.Client, "late", api.HealthPassing, wait)

	w.signal(syscall.SIGUSR2) // the child closes its listener
	w.out.waitFor(t, "closed", wait)
	consultest.WaitServiceStatus(t, agent.Client, "late", api.HealthCritical, wait)

	w.signal(syscall.SIGUSR1)
	consultest.WaitServiceStatus(t, agent.Client, "late", api.HealthPassing, wait)

	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, agent.Client, "late", wait)
}

func TestExitCodes(t *testing.T) {
	agent := consultest.StartAgent(t)
	cases := []struct {
		name string
		argv []string
		want int
	}{
		{"exit-0", helperArgv("exit", "0"), 0},
		{"exit-3", helperArgv("exit", "3"), 3},
		{"exit-7", helperArgv("exit", "7"), 7},
		{"sigterm", helperArgv("killself"), 128 + 15},
		{"shell-exit-42", []string{"sh", "-c", "exit 42"}, 42},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "codes-" + tc.name
			w := start(t, agent, append([]string{"--id", id, "codes", "--"}, tc.argv...)...)
			assert.Equal(t, tc.want, w.wait(wait), "stderr: %s", w.errOut)
			consultest.WaitServiceGone(t, agent.Client, id, wait)
		})
	}
}

// A command that ends at once may end while its registration is on its
// way: when svcwrap has exited, the agent holds nothing, run after run. The
// runs' commands live from 0 to 2 ms (where the old code failed), so that
// some end inside that window whatever the machine's pace. (Cutting the registration short left it
// registered, passing, in about 1 run of 20 of `true`: the agent applied it
// after svcwrap had looked and found nothing.)
func TestShortLivedCommand_NothingLeftRegistered(t *testing.T) {
	agent := consultest.StartAgent(t)
	const runs = 100
	var left []string
	for i := range runs {
		life := fmt.Sprintf("%.5f", float64(i)/50000) // seconds
		w := start(t, agent, "--id", "short", "short", "--", "sleep", life)
		require.Equal(t, 0, w.wait(wait), "stderr: %s", w.errOut)
		services, err := agent.Client.Agent().Services()
		require.NoError(t, err)
		if _, ok := services["short"]; ok {
			left = append(left, life)
			require.NoError(t, agent.Client.Agent().ServiceDeregister("short"))
		}
	}
	assert.Empty(t, left, "lives (s) of the commands, of %d, whose service was left registered", runs)
}

func TestReregistersAfterAgentRestart(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, "--ttl", "2s", "--heartbeat", "200ms", "-vvv", "phoenix", "--", "sleep", "1000")
	consultest.WaitServiceStatus(t, agent.Client, "phoenix", api.HealthPassing, wait)

	agent.Restart(t) // a -dev agent forgets every service it was told about
	consultest.WaitServiceStatus(t, agent.Client, "phoenix", api.HealthPassing, wait)
	w.errOut.waitFor(t, "forgot the service", wait)

	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+15, w.wait(wait))
	consultest.WaitServiceGone(t, agent.Client, "phoenix", wait)
}

func TestChildRunsWhileAgentIsDown(t *testing.T) {
	agent := consultest.StartAgent(t)
	agent.Stop(t)
	w := start(t, agent, "--consul-timeout", "500ms", "-vv", "patient", "--", "sh", "-c", "echo started; exec sleep 1000")
	w.out.waitFor(t, "started", wait)
	w.errOut.waitFor(t, "consul", wait) // the outage is logged

	agent.Restart(t)
	consultest.WaitServiceStatus(t, agent.Client, "patient", api.HealthPassing, wait)
	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, agent.Client, "patient", wait)
}

func TestIDCollision(t *testing.T) {
	agent := consultest.StartAgent(t)
	first := start(t, agent, "--port", "1", "--check-interval", "1s", "dup", "--", "sleep", "1000")
	consultest.WaitServicePresent(t, agent.Client, "dup", wait)

	t.Run("live-holder-refused", func(t *testing.T) {
		second := start(t, agent, "dup", "--", "sleep", "1000")
		assert.Equal(t, 2, second.wait(wait))
		assert.Contains(t, second.errOut.String(), "held by another running svcwrap")
		assert.Equal(t, 1, len(strings.Split(strings.TrimSpace(second.errOut.String()), "\n")), "one line: %s", second.errOut)
		// The first one's registration is untouched.
		svc, _, err := agent.Client.Agent().Service("dup", nil)
		require.NoError(t, err)
		assert.Equal(t, 1, svc.Port)
	})

	t.Run("stale-holder-taken-over", func(t *testing.T) {
		first.signal(syscall.SIGKILL) // leaves its registration behind
		first.wait(wait)
		second := start(t, agent, "--port", "2", "dup", "--", "sleep", "1000")
		consultest.Eventually(t, wait, func() (bool, string) {
			svc, _, err := agent.Client.Agent().Service("dup", nil)
			if err != nil {
				return false, err.Error()
			}
			return svc.Port == 2, fmt.Sprintf("port %d", svc.Port)
		}, "the second svcwrap takes over the stale registration")
		second.signal(syscall.SIGTERM)
		second.wait(wait)
	})
}

// Bad input: one line on stderr, exit 2, no child started, nothing registered.
func TestBadInput(t *testing.T) {
	agent := consultest.StartAgent(t)
	argv, ran := neverStarted(t)
	unreadable := filepath.Join(t.TempDir(), "no-such-token")
	cases := map[string][]string{
		"no-service-name":     append([]string{"--"}, argv...),
		"no-dash":             {"web"},
		"nothing-after-dash":  {"web", "--"},
		"no-args":             {},
		"unknown-flag":        append([]string{"--frobnicate", "web", "--"}, argv...),
		"port-zero":           append([]string{"--port", "0", "web", "--"}, argv...),
		"port-too-big":        append([]string{"--port", "65536", "web", "--"}, argv...),
		"port-not-a-number":   append([]string{"--port", "http", "web", "--"}, argv...),
		"ttl-not-a-duration":  append([]string{"--ttl", "soon", "web", "--"}, argv...),
		"ttl-zero":            append([]string{"--ttl", "0", "web", "--"}, argv...),
		"ttl-negative":        append([]string{"--ttl", "-5", "web", "--"}, argv...),
		"heartbeat-zero":      append([]string{"--heartbeat", "0", "web", "--"}, argv...),
		"heartbeat-ge-ttl":    append([]string{"--ttl", "5", "--heartbeat", "5", "web", "--"}, argv...),
		"meta-without-equals": append([]string{"--meta", "team", "web", "--"}, argv...),
		"empty-tag":           append([]string{"--tag", "", "web", "--"}, argv...),
		"unreadable-token":    append([]string{"--token-file", unreadable, "web", "--"}, argv...),
		"bad-stop-signal":     append([]string{"--stop-signal", "SIGNOPE", "web", "--"}, argv...),
		"bad-deregister":      append([]string{"--deregister", "sometimes", "web", "--"}, argv...),
		"two-service-names":   append([]string{"web", "api", "--"}, argv...),
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			code, stderr := runOnce(t, append([]string{"--consul", agent.HTTPAddr}, args...)...)
			assert.Equal(t, 2, code, "stderr: %s", stderr)
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			assert.Len(t, lines, 1, "one line on stderr: %q", stderr)
			assert.True(t, strings.HasPrefix(stderr, "svcwrap: "), "%q", stderr)
			assert.False(t, ran(), "the command must not start")
			noServices(t, agent.Client)
		})
	}
}

func TestCommandCannotStart(t *testing.T) {
	agent := consultest.StartAgent(t)
	notExec := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	cases := []struct {
		name string
		cmd  string
		want int
	}{
		{"not-found", "no-such-command-svcwrap", 127},
		{"not-executable", notExec, 126},
		{"directory", t.TempDir(), 126},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runOnce(t, "--consul", agent.HTTPAddr, "web", "--", tc.cmd)
			assert.Equal(t, tc.want, code, "stderr: %s", stderr)
			assert.Len(t, strings.Split(strings.TrimRight(stderr, "\n"), "\n"), 1, "%q", stderr)
			noServices(t, agent.Client)
		})
	}
}

// Every ianitor command line works unchanged.
func TestIanitorCommandLine(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, nil, "--consul-agent", agent.HTTPAddr, "--ttl", "10", "--heartbeat", "1",
		"--tags", "one", "--tags", "two", "--id", "ian-1", "--address", "127.0.0.5", "--port", "1234", "-vvv",
		"ian", "--", "sleep", "1000")
	consultest.WaitServicePresent(t, agent.Client, "ian-1", wait)
	svc, _, err := agent.Client.Agent().Service("ian-1", nil)
	require.NoError(t, err)
	assert.Equal(t, "ian", svc.Service)
	assert.Equal(t, []string{"one", "two"}, svc.Tags)
	assert.Equal(t, "127.0.0.5", svc.Address)
	assert.Equal(t, 1234, svc.Port)
	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, agent.Client, "ian-1", wait)
}

// Flags come from SVCWRAP_* too; a flag given on the command line wins.
func TestEnvironmentFlags(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Setenv("SVCWRAP_CONSUL", agent.HTTPAddr)
	t.Setenv("SVCWRAP_TAG", "x,y")
	t.Setenv("SVCWRAP_ID", "from-env")
	t.Setenv("SVCWRAP_PORT", "4321")
	w := start(t, nil, "--port", "1111", "envsvc", "--", "sleep", "1000")
	consultest.WaitServicePresent(t, agent.Client, "from-env", wait)
	svc, _, err := agent.Client.Agent().Service("from-env", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"x", "y"}, svc.Tags)
	assert.Equal(t, 1111, svc.Port, "the flag wins over SVCWRAP_PORT")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

func TestHelpAndVersion(t *testing.T) {
	out, err := exec.Command(svcwrapBin, "--help").CombinedOutput()
	require.NoError(t, err)
	for _, want := range []string{"SERVICE -- COMMAND", "--port", "--consul-agent", "--deregister", "--stop-signal", "SVCWRAP_", "128+N", "svcwrap --port 9999 netcat -- nc -l 9999"} {
		assert.Contains(t, string(out), want)
	}
	out, err = exec.Command(svcwrapBin, "--version").CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(out), "svcwrap")
}

// An unchanged status is refreshed with the same output: the TTL never
// lapses, and Consul's servers see no write (the catalog's ModifyIndex of the
// check stays put).
func TestHeartbeat_NoServerWrites(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, "--ttl", "1s", "--heartbeat", "100ms", "-vvv", "steady", "--", "sleep", "1000")
	consultest.WaitServiceStatus(t, agent.Client, "steady", api.HealthPassing, wait)
	index := func() uint64 {
		checks, _, err := agent.Client.Health().Checks("steady", nil)
		require.NoError(t, err)
		require.Len(t, checks, 1)
		require.Equal(t, api.HealthPassing, checks[0].Status, "the TTL lapsed: %s", checks[0].Output)
		return checks[0].ModifyIndex
	}
	// Wait for the first heartbeat after passing, then for ten more.
	w.errOut.waitFor(t, "heartbeat", wait)
	before := index()
	first := w.errOut.count("heartbeat")
	consultest.Eventually(t, wait, func() (bool, string) {
		n := w.errOut.count("heartbeat") - first
		return n >= 10, fmt.Sprintf("%d heartbeats", n)
	}, "ten heartbeats")
	assert.Equal(t, before, index(), "heartbeats must not change the check in the catalog")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// A live child that is slow to become ready keeps its entry past
// DeregisterCriticalServiceAfter (1m, Consul's minimum): svcwrap registers
// again before Consul's reaper would remove it. Watched for 100 s, since the
// reaper runs every 30 s.
func TestSlowStarter_NotReaped(t *testing.T) {
	t.Parallel()
	agent := consultest.StartAgent(t)
	port := freePort(t)
	args := append([]string{"--port", strconv.Itoa(port), "--deregister-after", "1m", "slow", "--"},
		helperArgv("listener", strconv.Itoa(port))...)
	w := start(t, agent, args...)
	w.out.waitFor(t, "ready", wait)
	consultest.WaitServiceStatus(t, agent.Client, "slow", api.HealthCritical, wait)

	end := time.Now().Add(100 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		<-tick.C
		status, output := checkStatus(t, agent.Client, "slow")
		require.Equal(t, api.HealthCritical, status, "the entry of a live, not yet ready child vanished or changed: %s", output)
	}
	w.signal(syscall.SIGUSR1) // now it listens
	consultest.WaitServiceStatus(t, agent.Client, "slow", api.HealthPassing, wait)
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// Tokens never appear in svcwrap's logs, even at -vvv and when the agent
// refuses a request.
func TestLogs_NoToken(t *testing.T) {
	const secret = "b7c1e1f0-token-never-logged"
	agent := consultest.StartAgent(t)
	t.Setenv("CONSUL_HTTP_TOKEN", secret)
	w := start(t, agent, "-vvv", "--log-format", "json", "quiet", "--", "sleep", "1000")
	consultest.WaitServiceStatus(t, agent.Client, "quiet", api.HealthPassing, wait)
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+15, w.wait(wait))
	w.errOut.waitEOF(t, wait)
	assert.Contains(t, w.errOut.String(), `"msg":"deregistered"`)
	assert.NotContains(t, w.errOut.String(), secret)
	for _, line := range strings.Split(strings.TrimSpace(w.errOut.String()), "\n") {
		assert.True(t, strings.HasPrefix(line, "{"), "json log line: %q", line)
	}
}

func TestLogs_QuietByDefault(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, "hush", "--", "sh", "-c", "exit 0")
	assert.Equal(t, 0, w.wait(wait))
	w.errOut.waitEOF(t, wait)
	assert.Empty(t, w.errOut.String(), "no -v: nothing on stderr")
}

// Every svcwrap on a host connects to the agent from the same address, and an
// agent admits a limited number of concurrent connections per client IP
// (limits.http_max_conns_per_client, 200 by default). A wrapper that kept its
// connection between heartbeats would hold one of those for life, and the
// wrappers beyond the limit would never register. Here the limit is 4 and 12
// wrappers start, and stop, together: all must pass, and all must be gone
// after a mass SIGTERM, well before Consul's reaper could have removed them.
func TestManyWrappers_AgentConnectionLimit(t *testing.T) {
	const n = 12
	agent := consultest.StartAgent(t,
		consultest.WithHelperSource("127.0.0.2"),
		consultest.WithArgs("-hcl", "limits { http_max_conns_per_client = 4 }"))
	ws := make([]*wrapped, n)
	for i := range ws {
		ws[i] = start(t, agent, "--ttl", "30s", "-vv", fmt.Sprintf("lim%d", i), "--", "sleep", "1000")
	}
	for i := range ws {
		consultest.WaitServiceStatus(t, agent.Client, fmt.Sprintf("lim%d", i), api.HealthPassing, wait)
	}
	for _, w := range ws {
		w.signal(syscall.SIGTERM)
	}
	for i, w := range ws {
		assert.Equal(t, 128+int(syscall.SIGTERM), w.wait(wait), "wrapper %d; stderr:\n%s", i, w.errOut)
	}
	// Each has deregistered by itself: a 30 s TTL and Consul's one-minute
	// reaper would take 90 s.
	for i := range ws {
		consultest.WaitServiceGone(t, agent.Client, fmt.Sprintf("lim%d", i), 5*time.Second)
	}
}
