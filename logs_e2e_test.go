package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// jsonLines parses every line of stderr as one JSON object, failing the
// test for any that is not.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var obj map[string]any
		if !assert.NoError(t, json.Unmarshal([]byte(line), &obj), "not one JSON object: %q", line) {
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

// A failing run at -vvv in JSON: the agent denies every request (ACL,
// no token), and the notify socket is gone. Every line on stderr is one
// JSON object that names the service and the child's pid, the lines of
// the notify socket and of the standard library included.
func TestLogs_JSONEveryLineHasServiceAndPid(t *testing.T) {
	agent := consultest.StartAgent(t, consultest.WithACL(consultest.NewUUID(t)))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	t.Setenv("WATCHDOG_USEC", "2000000") // a keep-alive at once, which fails
	w := start(t, agent, append([]string{"-vvv", "--log-format", "json", "--ttl", "1s", "denied", "--"}, helperArgv("pid")...)...)
	w.out.waitFor(t, "ready", wait)
	pid := childPid(t, w)
	w.errOut.waitFor(t, `"msg":"systemd notify: cannot send"`, wait)
	w.errOut.waitFor(t, "403", wait)
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+15, w.wait(wait))
	w.errOut.waitEOF(t, wait)

	objs := jsonLines(t, w.errOut.String())
	require.NotEmpty(t, objs)
	for _, obj := range objs {
		assert.Equal(t, "denied", obj["service"], "%v", obj)
		assert.Equal(t, float64(pid), obj["pid"], "%v", obj)
	}
}

// With --log-format json, the line svcwrap ends with when it fails is a
// JSON object too, at ERROR, shown at the default verbosity; it names the
// service (no pid: the command never ran).
func TestLogs_JSONErrorLine(t *testing.T) {
	code, stderr := runOnce(t, "--consul", "127.0.0.1:1", "--log-format", "json", "web", "--", "/nonexistent/web")
	assert.Equal(t, 127, code)
	objs := jsonLines(t, stderr)
	require.Len(t, objs, 1, "%s", stderr)
	assert.Equal(t, "ERROR", objs[0]["level"])
	assert.Equal(t, "web", objs[0]["service"])
	assert.Contains(t, objs[0]["msg"], "/nonexistent/web")

	// Text keeps its one plain line.
	code, stderr = runOnce(t, "--consul", "127.0.0.1:1", "web", "--", "/nonexistent/web")
	assert.Equal(t, 127, code)
	assert.Regexp(t, `^svcwrap: .*/nonexistent/web.*\n$`, stderr)
}
