package main

// systemd's notify protocol and svcwrap's log lines, end to end: the svcwrap
// binary against a real Consul agent, telling a real unixgram socket that
// the test reads as systemd would.

import (
	"encoding/json"
	"slices"
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

// notifySocket is systemd's end of NOTIFY_SOCKET. On READY=1 it asks the
// agent, at once, for the service's status, which it records after the
// message's fields as "consul=<status>".
type notifySocket struct{ *consultest.NotifySocket }

func listenNotify(t *testing.T, agent *consultest.Agent, id string) notifySocket {
	t.Helper()
	return notifySocket{consultest.ListenNotify(t, func(msg []string) []string {
		if slices.Contains(msg, "READY=1") {
			status, _ := checkStatus(t, agent.Client, id)
			msg = append(msg, "consul="+status)
		}
		return msg
	})}
}

func (n notifySocket) all() []string { return n.Fields() }

// index is the position of the first field with prefix, or -1.
func (n notifySocket) index(prefix string) int {
	return slices.IndexFunc(n.all(), func(f string) bool { return strings.HasPrefix(f, prefix) })
}

func (n notifySocket) count(field string) int {
	c := 0
	for _, f := range n.all() {
		if f == field {
			c++
		}
	}
	return c
}

func (n notifySocket) waitFor(t *testing.T, prefix string) {
	t.Helper()
	n.WaitFor(t, wait, func(f string) bool { return strings.HasPrefix(f, prefix) }, "a "+prefix+" notification")
}

// READY=1 only once Consul has the service passing, STATUS= as it changes,
// keep-alives at half of WATCHDOG_USEC while the child lives, STOPPING=1
// when the stop begins and no keep-alive after it.
func TestNotify_Systemd(t *testing.T) {
	agent := consultest.StartAgent(t)
	n := listenNotify(t, agent, "notified")
	t.Setenv("NOTIFY_SOCKET", n.Path)
	t.Setenv("WATCHDOG_USEC", "200000") // a keep-alive every 100ms
	port := freePort(t)
	args := append([]string{"--port", strconv.Itoa(port), "notified", "--"}, helperArgv("listener", strconv.Itoa(port))...)
	w := start(t, agent, args...)
	w.out.waitFor(t, "ready", wait)

	// Registered, critical: the child does not listen yet.
	n.waitFor(t, "STATUS=critical in Consul")
	consultest.Eventually(t, wait, func() (bool, string) {
		return n.count("WATCHDOG=1") >= 3, strings.Join(n.all(), " | ")
	}, "keep-alives while the child lives")
	assert.Equal(t, -1, n.index("READY=1"), "READY=1 before the service passes")

	w.signal(syscall.SIGUSR1) // now it listens
	n.waitFor(t, "READY=1")
	all := n.all()
	ready := slices.Index(all, "READY=1")
	assert.Contains(t, all[ready:], "consul=passing", "at READY=1, Consul has the service passing")
	assert.True(t, strings.HasPrefix(all[ready+1], "STATUS=passing in Consul"), "READY=1 comes with its status: %q", all)

	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+int(syscall.SIGTERM), w.wait(wait), "the listener dies of SIGTERM")
	n.waitFor(t, "STOPPING=1")
	all = n.all()
	stopping := slices.Index(all, "STOPPING=1")
	assert.NotContains(t, all[stopping:], "WATCHDOG=1", "a keep-alive after STOPPING=1: %q", all)
	assert.Equal(t, 1, n.count("READY=1"))
	assert.Equal(t, 1, n.count("STOPPING=1"))
	consultest.WaitServiceGone(t, agent.Client, "notified", wait)
}

// The child never sees systemd's notify variables: svcwrap answers them.
func TestNotify_NotPassedToChild(t *testing.T) {
	agent := consultest.StartAgent(t)
	n := listenNotify(t, agent, "envcheck")
	t.Setenv("NOTIFY_SOCKET", n.Path)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "") // unset in effect: any pid
	t.Setenv("SVCWRAP_TEST_KEEP", "kept")
	w := start(t, agent, append([]string{"envcheck", "--"},
		helperArgv("env", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SVCWRAP_TEST_KEEP")...)...)
	assert.Equal(t, 0, w.wait(wait))
	w.out.waitEOF(t, wait)
	assert.Contains(t, w.out.String(), "env NOTIFY_SOCKET unset")
	assert.Contains(t, w.out.String(), "env WATCHDOG_USEC unset")
	assert.Contains(t, w.out.String(), "env WATCHDOG_PID unset")
	assert.Contains(t, w.out.String(), "env SVCWRAP_TEST_KEEP=kept", "the rest of the environment is passed on")
	n.waitFor(t, "STOPPING=1")
}

// --notify without a socket is bad input; --notify=false tells nothing.
func TestNotify_Flag(t *testing.T) {
	code, stderr := runOnce(t, "--notify", "x", "--", "true")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--notify: NOTIFY_SOCKET is not set")

	agent := consultest.StartAgent(t)
	n := listenNotify(t, agent, "untold")
	t.Setenv("NOTIFY_SOCKET", n.Path)
	w := start(t, agent, "--notify=false", "untold", "--", "true")
	assert.Equal(t, 0, w.wait(wait))
	w.errOut.waitEOF(t, wait)
	assert.Empty(t, n.all(), "--notify=false: nothing sent")
}

// Every line of a run at -vvv in JSON is one object that names the service
// and the child's pid, and each step of the lifecycle has its line at
// EVENT, which -v shows.
func TestLogs_FieldsOnEveryLine(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"-vvv", "--log-format", "json", "fields", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	consultest.WaitServiceStatus(t, agent.Client, "fields", api.HealthPassing, wait)
	w.errOut.waitFor(t, `"msg":"status"`, wait)
	w.signal(syscall.SIGHUP)
	w.out.waitFor(t, "got hangup", wait)
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 0, w.wait(wait))
	w.errOut.waitEOF(t, wait)

	var (
		pid    float64
		events []string
	)
	lines := strings.Split(strings.TrimSpace(w.errOut.String()), "\n")
	require.NotEmpty(t, lines)
	for _, line := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "one JSON object per line: %q", line)
		assert.Equal(t, "fields", rec["service"], "the service ID: %q", line)
		p, ok := rec["pid"].(float64)
		require.True(t, ok, "the child's pid: %q", line)
		if pid == 0 {
			pid = p
		}
		assert.Equal(t, pid, p, "one child, one pid: %q", line)
		if rec["level"] == "EVENT" {
			msg, _ := rec["msg"].(string)
			if sig, ok := rec["signal"].(string); ok {
				msg += " " + sig
			}
			events = append(events, msg)
		}
	}
	assert.NotEqual(t, float64(w.cmd.Process.Pid), pid, "the child's pid, not svcwrap's")
	assert.Equal(t, []string{
		"running", "registered", "status", "forwarded signal SIGHUP",
		"stopping SIGTERM", "deregistered", "forwarded stop signal SIGTERM", "command ended",
	}, events, "the lifecycle at EVENT, in order")

	// The first line says what svcwrap does.
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	assert.Equal(t, "running", first["msg"])
	for _, key := range []string{"name", "command", "agents", "port", "checks", "ttl", "heartbeat", "deregister", "notify"} {
		assert.Contains(t, first, key, "the start line names %s", key)
	}
	assert.Equal(t, []any{agent.HTTPAddr}, first["agents"])
}

// At -v a healthy run says what svcwrap does, and nothing more: the EVENT
// lines, no heartbeat, no detail.
func TestLogs_EventsAtV(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, "-v", "--ttl", "1s", "--heartbeat", "100ms", "brief", "--", "sleep", "1000")
	consultest.WaitServiceStatus(t, agent.Client, "brief", api.HealthPassing, wait)
	w.errOut.waitFor(t, "msg=status", wait)
	// Passing past its 1s TTL: heartbeats were sent, and none may show at -v.
	passing := time.Now()
	consultest.Eventually(t, wait, func() (bool, string) {
		status, output := checkStatus(t, agent.Client, "brief")
		return status == api.HealthPassing && time.Since(passing) > 1500*time.Millisecond, output
	}, "the check to stay passing past its TTL")
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+int(syscall.SIGTERM), w.wait(wait))
	w.errOut.waitEOF(t, wait)
	for _, line := range strings.Split(strings.TrimSpace(w.errOut.String()), "\n") {
		assert.Contains(t, line, "level=EVENT", "only lifecycle lines at -v on a healthy run: %q", line)
		assert.Contains(t, line, "service=brief pid=", "service and pid first: %q", line)
	}
	assert.Equal(t, 1, w.errOut.count("msg=running"))
	assert.Equal(t, 1, w.errOut.count("msg=\"command ended\""))
}
